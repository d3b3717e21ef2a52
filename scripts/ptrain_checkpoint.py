#!/usr/bin/env python3
"""Read ptrain checkpoints from Python.

  ptrain_checkpoint.py tensors CKPT                    name, shape and CRC-32 of every tensor (numpy only)
  ptrain_checkpoint.py predict CKPT --data DIR --index I [I ...] [--torch]
                                                       class probabilities from a numpy forward pass
                                                       (--torch: from the torch.nn model)
                                                       (test images of MNIST-format IDX or CIFAR-10 data)
  ptrain_checkpoint.py eval CKPT [--data DIR]          test accuracy of the equivalent torch.nn model (needs torch)
  ptrain_checkpoint.py onnx CKPT MODEL.onnx            the torch.nn model as ONNX, normalisation and softmax included
                                                       (needs torch, onnx, onnxscript; scripts/setup --python)
  ptrain_checkpoint.py predict CKPT --onnx MODEL.onnx --data DIR --index I [I ...]
                                                       class probabilities from the ONNX model in onnxruntime

The format (docs/CHECKPOINTS.md): safetensors, float32, PyTorch layouts and names -- convN.weight
[out, in, kh, kw], fcN.weight [out, in] with in flattened as (c, h, w), bnN.weight/bias/running_mean/
running_var/num_batches_tracked, resN.proj.weight/bias (a residual block's 1x1 shortcut) -- and the
model spec in the metadata. Padding follows TensorFlow's SAME: extra padding goes at the bottom/right.
Inputs are pixels / 255, then (x - mean) / std per channel with the checkpoint's input_mean and
input_std (format versions 2 and 3; version 1 checkpoints have neither and use pixels / 255). Optimizer
state (adam.*, sgd.*) is not part of the model.
"""
import argparse, gzip, json, os, re, struct, sys, zlib
import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, t in header.items():
        assert t["dtype"] == "F32", f"{name}: dtype {t['dtype']}"
        b, e = t["data_offsets"]
        tensors[name] = np.frombuffer(data[base + b:base + e], dtype="<f4").reshape(t["shape"])
    return tensors, meta


def parse_spec(text):
    """The spec as a list of (name, args, named) tuples; `res(` and its `)` as ("res", ...) and ("end", ...)."""
    layers, i = [], 0
    while i < len(text):
        if text[i] in " ,\t\n":
            i += 1
            continue
        if text.startswith("->", i):
            i += 2
            continue
        if text[i] == ")":
            layers.append(("end", [], {}))
            i += 1
            continue
        m = re.match(r"([A-Za-z_][A-Za-z_0-9]*)\s*", text[i:])
        if not m:
            sys.exit(f"spec: unexpected {text[i]!r} at column {i + 1}")
        name = m.group(1).lower()
        i += m.end()
        if name == "res":
            layers.append(("res", [], {}))
            i += 1  # its "("
            continue
        pos, named = [], {}
        if i < len(text) and text[i] == "(":
            close = text.index(")", i)
            for a in text[i + 1:close].split(","):
                a = a.strip()
                if not a:
                    continue
                if "=" in a:
                    k, v = a.split("=", 1)
                    named[k.strip()] = v.strip()
                else:
                    pos.append(float(a))
            i = close + 1
        layers.append((name, pos, named))
    return layers


def same_padding(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def layer_plan(meta):
    """(kind, params) per layer with relu fused, in order; conv/bn/fc/res numbered as ptrain names them."""
    plan, count = [], {"conv": 0, "bn": 0, "fc": 0, "res": 0}
    layers = parse_spec(meta["spec"])
    dense, strides = False, []  # strides: each open residual block's convs' stride product

    def number(kind):
        count[kind] += 1
        return f"{kind}{count[kind]}"

    for i, (name, pos, named) in enumerate(layers):
        relu = i + 1 < len(layers) and layers[i + 1][0] == "relu"
        if name == "conv":
            k = int(named.get("k", pos[1] if len(pos) > 1 else 0))
            s = int(named.get("stride", pos[2] if len(pos) > 2 else 1))
            plan.append(("conv", dict(name=number("conv"), out=int(pos[0]), k=k, s=s, same=named.get("pad", "same") == "same",
                                      relu=relu, bias=named.get("bias", "true").lower() == "true")))
            if strides:
                strides[-1] *= s
        elif name in ("bn", "batchnorm"):
            plan.append(("bn", dict(name=number("bn"), relu=relu, dense=dense)))
        elif name in ("maxpool", "avgpool"):
            size = int(named.get("size", pos[0]))
            s = int(named.get("stride", pos[1] if len(pos) > 1 else size))
            plan.append((name, dict(size=size, s=s)))
        elif name in ("gap", "globalavgpool"):
            plan.append(("gap", {}))
        elif name == "res":
            plan.append(("res", {}))
            strides.append(1)
        elif name == "end":
            plan.append(("end", dict(name=number("res"), relu=relu, s=strides.pop())))
        elif name == "dropout":
            plan.append(("dropout", dict(keep=float(named.get("keep", pos[0] if pos else 1)))))
        elif name in ("fc", "dense"):
            dense = True
            plan.append(("fc", dict(name=number("fc"), out=int(pos[0]), relu=relu, bias=named.get("bias", "true").lower() == "true")))
    return plan


BN_EPS = 1e-5


def numpy_forward(tensors, meta, x):
    """x: [N, C, H, W] float64, normalised (see `model_input`); returns logits [N, classes]."""
    def get(name):
        return tensors[name].astype(np.float64)

    def conv(x, w, b, k, s, same):
        n, c, h, wd = x.shape
        if same:
            (t, bo), (l, r) = same_padding(h, k, s), same_padding(wd, k, s)
            x = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
        oh, ow = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
        y = np.zeros((n, w.shape[0], oh, ow))
        for kh in range(k):
            for kw in range(k):
                patch = x[:, :, kh:kh + s * oh:s, kw:kw + s * ow:s]
                y += np.einsum("nchw,oc->nohw", patch, w[:, :, kh, kw])
        return y + (b[None, :, None, None] if b is not None else 0)

    blocks = []
    for kind, p in layer_plan(meta):
        if kind == "conv":
            b = get(p["name"] + ".bias") if p["bias"] else None
            x = conv(x, get(p["name"] + ".weight"), b, p["k"], p["s"], p["same"])
        elif kind == "bn":
            shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
            mean, var = get(p["name"] + ".running_mean").reshape(shape), get(p["name"] + ".running_var").reshape(shape)
            x = (x - mean) / np.sqrt(var + BN_EPS) * get(p["name"] + ".weight").reshape(shape) + get(p["name"] + ".bias").reshape(shape)
        elif kind in ("maxpool", "avgpool"):
            size, s = p["size"], p["s"]
            n, c, h, wd = x.shape
            oh, ow = (h - size) // s + 1, (wd - size) // s + 1
            windows = [x[:, :, i:i + s * oh:s, j:j + s * ow:s] for i in range(size) for j in range(size)]
            x = np.max(windows, axis=0) if kind == "maxpool" else np.mean(windows, axis=0)
        elif kind == "gap":
            x = x.mean(axis=(2, 3), keepdims=True)
        elif kind == "res":
            blocks.append(x)
        elif kind == "end":
            shortcut = blocks.pop()
            if p["name"] + ".proj.weight" in tensors:
                shortcut = conv(shortcut, get(p["name"] + ".proj.weight"), get(p["name"] + ".proj.bias"), 1, p["s"], True)
            x = x + shortcut
        elif kind == "fc":
            x = x.reshape(x.shape[0], -1) @ get(p["name"] + ".weight").T + (get(p["name"] + ".bias") if p["bias"] else 0)
        if kind in ("conv", "fc", "bn", "end") and p["relu"]:
            x = np.maximum(x, 0)
    return x


def model_input(images, meta):
    """uint8 images [N, H, W] or [N, H, W, C] -> float32 [N, C, H, W] as ptrain feeds them."""
    x = images.astype(np.float32) * np.float32(1 / 255)
    if x.ndim == 3:
        x = x[..., None]
    if "input_mean" in meta:
        mean = np.array([float(v) for v in meta["input_mean"].split(",")], dtype=np.float32)
        std = np.array([float(v) for v in meta["input_std"].split(",")], dtype=np.float32)
        x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_test(directory):
    """The test split's images (uint8, [N, H, W] or [N, H, W, C]) and labels."""
    for base in (directory, os.path.join(directory, "cifar-10-batches-bin")):
        path = os.path.join(base, "test_batch.bin")
        if os.path.exists(path):
            rec = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
            return rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), rec[:, 0]
    for stem in ("t10k-images-idx3-ubyte", "t10k-images-idx4-ubyte"):
        if any(os.path.exists(os.path.join(directory, stem + ext)) for ext in ("", ".gz")):
            return load_idx(directory, stem), load_idx(directory, "t10k-labels-idx1-ubyte")
    sys.exit(f"{directory}: no MNIST-format or CIFAR-10 test files (image folders: use ptrain predict)")


def load_idx(directory, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            data = (gzip.open if name.endswith(".gz") else open)(path, "rb").read()
            ndim = data[3]
            dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
            return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)
    sys.exit(f"{directory}: missing {stem}")


def torch_network(spec, input_shape):
    """The torch.nn model of a spec for inputs of `input_shape` (h, w, c), NCHW, freshly initialised:
    its modules are named as ptrain names the checkpoint's tensors."""
    import torch
    import torch.nn.functional as F

    class PTrainNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.plan = layer_plan({"spec": spec})
            h, w, c = input_shape
            blocks = []
            for kind, p in self.plan:
                if kind == "conv":
                    self.add_module(p["name"], torch.nn.Conv2d(c, p["out"], p["k"], stride=p["s"], bias=p["bias"]))
                    k, s = p["k"], p["s"]
                    h, w = ((-(-h // s), -(-w // s)) if p["same"] else ((h - k) // s + 1, (w - k) // s + 1))
                    c = p["out"]
                elif kind == "bn":
                    self.add_module(p["name"], (torch.nn.BatchNorm1d if p["dense"] else torch.nn.BatchNorm2d)(c, eps=BN_EPS, momentum=0.1))
                elif kind in ("maxpool", "avgpool"):
                    h, w = (h - p["size"]) // p["s"] + 1, (w - p["size"]) // p["s"] + 1
                elif kind == "gap":
                    h = w = 1
                elif kind == "res":
                    blocks.append((h, w, c))
                elif kind == "end":
                    start = blocks.pop()
                    if start != (h, w, c):
                        block = torch.nn.Module()
                        block.add_module("proj", torch.nn.Conv2d(start[2], c, 1))
                        self.add_module(p["name"], block)
                elif kind == "fc":
                    self.add_module(p["name"], torch.nn.Linear(c * h * w, p["out"], bias=p["bias"]))
                    c, h, w = p["out"], 1, 1

        def forward(self, x):
            blocks = []
            for kind, p in self.plan:
                if kind == "conv":
                    if p["same"]:
                        k, s = p["k"], p["s"]
                        (t, b), (l, r) = same_padding(x.shape[2], k, s), same_padding(x.shape[3], k, s)
                        x = F.pad(x, (l, r, t, b))
                    x = getattr(self, p["name"])(x)
                elif kind == "bn":
                    x = getattr(self, p["name"])(x)
                elif kind == "maxpool":
                    x = F.max_pool2d(x, p["size"], p["s"])
                elif kind == "avgpool":
                    x = F.avg_pool2d(x, p["size"], p["s"])
                elif kind == "gap":
                    x = F.adaptive_avg_pool2d(x, 1)
                elif kind == "dropout":
                    x = F.dropout(x, p=1 - p["keep"], training=self.training)
                elif kind == "res":
                    blocks.append(x)
                elif kind == "end":
                    shortcut = blocks.pop()
                    if hasattr(self, p["name"]):
                        proj = getattr(self, p["name"]).proj
                        shortcut = F.conv2d(shortcut, proj.weight, proj.bias, stride=p["s"])
                    x = x + shortcut
                elif kind == "fc":
                    x = getattr(self, p["name"])(x.flatten(1))
                if kind in ("conv", "fc", "bn", "end") and p["relu"]:
                    x = F.relu(x)
            return x

    return PTrainNet()


def torch_model(tensors, meta):
    """The torch.nn model of a checkpoint (`torch_network` with the file's tensors loaded), in eval mode."""
    import torch
    h, w, c = (int(v) for v in meta["input_shape"].split(","))
    model = torch_network(meta["spec"], (h, w, c))
    state = {k: torch.from_numpy(v.copy()) for k, v in tensors.items() if not k.startswith(("adam.", "sgd."))}
    model.load_state_dict(state)
    return model.eval()


class Deployable:
    """What an ONNX file holds: decoded pixels in (uint8 [N, H, W, C], the bytes ptrain's data holds,
    after any --resize), probabilities and logits out; the checkpoint's normalisation inside."""

    def __new__(cls, tensors, meta):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = torch_model(tensors, meta)
                c = int(meta["input_shape"].split(",")[2])
                mean, std = [0.0] * c, [1.0] * c
                if "input_mean" in meta:
                    mean = [float(v) for v in meta["input_mean"].split(",")]
                    std = [float(v) for v in meta["input_std"].split(",")]
                self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
                self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

            def forward(self, images):
                # The same float32 steps as model_input: pixels * (1/255), then (x - mean) / std.
                x = images.to(torch.float32) * torch.tensor(1 / 255, dtype=torch.float32)
                x = ((x - self.mean) / self.std).permute(0, 3, 1, 2)
                logits = self.net(x)
                return torch.softmax(logits, dim=1), logits

        return Wrapped().eval()


def export_onnx(tensors, meta, out):
    import torch
    h, w, c = (int(v) for v in meta["input_shape"].split(","))
    model = Deployable(tensors, meta)
    example = torch.zeros((2, h, w, c), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(model, (example,), input_names=["images"], output_names=["probabilities", "logits"],
                                dynamic_shapes={"images": {0: batch}}, dynamo=True)
    program.optimize()
    # Written beside the target, then renamed over it: no half-written model under the name.
    tmp = out + ".tmp"
    program.save(tmp)
    os.replace(tmp, out)
    print(f"{out}: ONNX model of '{meta['spec']}', input images uint8 [N, {h}, {w}, {c}], outputs probabilities and logits [N, {meta['classes']}]")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["tensors", "predict", "eval", "onnx"])
    ap.add_argument("checkpoint")
    ap.add_argument("output", nargs="?", help="onnx: the .onnx file to write")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--index", type=int, nargs="*", default=[0])
    ap.add_argument("--torch", action="store_true", help="predict with the torch.nn model instead of numpy")
    ap.add_argument("--onnx", help="predict with this ONNX model in onnxruntime instead of numpy")
    a = ap.parse_args()
    if (a.command == "onnx") != (a.output is not None):
        ap.error("the output file is given for onnx (and only there): ptrain_checkpoint.py onnx CKPT MODEL.onnx")
    tensors, meta = read_safetensors(a.checkpoint)
    if a.command == "tensors":
        for name in sorted(tensors):
            t = tensors[name]
            print(name, ",".join(map(str, t.shape)), format(zlib.crc32(t.astype("<f4").tobytes()), "08x"))
    elif a.command == "predict":
        images, _ = load_test(a.data)
        x = model_input(images[a.index], meta)
        if a.onnx:
            import onnxruntime
            session = onnxruntime.InferenceSession(a.onnx, providers=["CPUExecutionProvider"])
            pixels = images[a.index]
            if pixels.ndim == 3:
                pixels = pixels[..., None]
            p = session.run(["probabilities"], {"images": np.ascontiguousarray(pixels)})[0]
            for i, row in zip(a.index, p):
                print(i, " ".join(f"{v:.8f}" for v in row))
            return
        if a.torch:
            import torch
            with torch.no_grad():
                logits = torch_model(tensors, meta)(torch.from_numpy(x)).double().numpy()
        else:
            logits = numpy_forward(tensors, meta, x.astype(np.float64))
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        for i, row in zip(a.index, p):
            print(i, " ".join(f"{v:.8f}" for v in row))
    elif a.command == "onnx":
        export_onnx(tensors, meta, a.output)
    else:
        import torch
        images, labels = load_test(a.data)
        model = torch_model(tensors, meta)
        correct = 0
        with torch.no_grad():
            for s in range(0, len(images), 500):
                x = torch.from_numpy(model_input(images[s:s + 500], meta))
                correct += int((model(x).argmax(1).numpy() == labels[s:s + 500]).sum())
        print(f"torch test accuracy {100 * correct / len(images):.2f}% ({correct}/{len(images)})")


if __name__ == "__main__":
    main()
