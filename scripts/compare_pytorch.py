#!/usr/bin/env python3
"""Times training steps of the reference network in PyTorch (CPU), as `ptrain bench` does:
synthetic 28x28 images, median of N timed steps after a warm-up. Prints one JSON object.

--config fast (the default) is the fastest setup found for PyTorch 2.13 here: channels-last
tensors (oneDNN's NHWC convolutions) and Adam(fused=True), one pass over the parameters instead
of a loop of small kernels per tensor; it is ~2x the samples/s of --config plain."""
import argparse, json, statistics, time
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=50)
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--config", choices=["fast", "plain"], default="fast")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(1)
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Flatten(), torch.nn.Linear(6272, 1024), torch.nn.ReLU(), torch.nn.Dropout(0.5),
    torch.nn.Linear(1024, 10))
fast = a.config == "fast"
opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fast)
loss_fn = torch.nn.CrossEntropyLoss()
x = torch.rand(a.batch, 1, 28, 28)
if fast:
    model = model.to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
y = torch.randint(0, 10, (a.batch,))
times = []
for i in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    opt.step()
    if i >= a.warmup:
        times.append(time.perf_counter() - t0)
med = statistics.median(times)
print(json.dumps({"threads": a.threads, "batch": a.batch, "median_step_ms": med * 1000,
                  "samples_per_sec": a.batch / med, "config": a.config, "torch": torch.__version__}))
