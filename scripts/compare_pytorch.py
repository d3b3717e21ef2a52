#!/usr/bin/env python3
"""Times training steps of the reference network (or any spec, --spec with --input HxWxC) in
PyTorch (CPU), as `ptrain bench` does: synthetic images, median of N timed steps after a
warm-up. Prints one JSON object. A spec's torch.nn model is the one scripts/ptrain_checkpoint.py
builds (TensorFlow's SAME padding by an explicit pad, as ptrain pads).

--config fast (the default) is the fastest setup found for PyTorch 2.13 here: channels-last
tensors (oneDNN's NHWC convolutions) and Adam(fused=True), one pass over the parameters instead
of a loop of small kernels per tensor; it is ~2x the samples/s of --config plain.

--config bf16 is fast plus the forward pass and loss under torch.autocast("cpu", bfloat16):
PyTorch's mixed precision, fp32 master weights and optimizer, bf16 convolutions and matmuls
(oneDNN runs them on AMX or AVX512-BF16). On a CPU with those units it is PyTorch's fastest
setup, the one to hold ptrain's --precision bf16 against."""
import argparse, contextlib, json, os, statistics, sys, time
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=50)
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--config", choices=["fast", "plain", "bf16"], default="fast")
ap.add_argument("--spec", help="a ptrain model spec (default: the reference network)")
ap.add_argument("--input", default="28x28x1", help="HxWxC of the synthetic images")
ap.add_argument("--classes", type=int, default=10)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(1)
h, w, c = (int(v) for v in a.input.split("x"))
if a.spec:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from ptrain_checkpoint import torch_network
    model = torch_network(a.spec, (h, w, c))
else:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(6272, 1024), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(1024, 10))
fast = a.config in ("fast", "bf16")
# Autocast wraps only forward and loss, as PyTorch recommends: backward runs each op in the
# dtype its forward used, and the optimizer updates the fp32 weights.
autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if a.config == "bf16"
            else contextlib.nullcontext())
opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fast)
loss_fn = torch.nn.CrossEntropyLoss()
x = torch.rand(a.batch, c, h, w)
if fast:
    model = model.to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
y = torch.randint(0, a.classes, (a.batch,))
times = []
for i in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with autocast:
        loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    if i >= a.warmup:
        times.append(time.perf_counter() - t0)
med = statistics.median(times)
print(json.dumps({"threads": a.threads, "batch": a.batch, "median_step_ms": med * 1000,
                  "samples_per_sec": a.batch / med, "config": a.config, "torch": torch.__version__}))
