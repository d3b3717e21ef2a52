#!/usr/bin/env python3
"""Writes the PyTorch reference that PyTorchReferenceTests compares ptrain with.

A small network that takes most conv paths ptrain has: a one-channel conv (ptrain's direct
kernel), a 16 -> 16 channel 3x3 stride-1 conv (direct, channels-last; Winograd in ptrain before
2026-12-06, and Winograd's 32-channel convs are in the ResNet reference) and a stride-2 VALID conv (im2col), a max
and an average pool, and two dense layers. In float64: its weights, one input batch and labels,
the logits, the mean cross-entropy loss, every gradient, and the weights after 1 and after 3 Adam
steps on that batch -- and, from the same start, after 1 and 3 steps of AdamW (weight decay, with
StepLR halving the rate each step) and of SGD (momentum and weight decay, with CosineAnnealingLR
over 3 steps), torch.optim's and torch.optim.lr_scheduler's own -- all stored as float32 in ptrain's layouts (conv [kh][kw][cin][cout], dense
[in][out] with inputs flattened in (h, w, c) order) in a safetensors file.

    python3 scripts/pytorch-reference.py [FOLDER]    (default Tests/TrainingTests)

A second file, pytorch-reference-resnet.safetensors, does the same for a ResNet-style network:
batch norm in training mode, an identity and a projected residual block, global average pooling
-- with the running statistics after 3 Adam steps and the eval-mode logits that use them.
"""
import copy, json, os, struct, sys
import torch

SPEC = "conv(16,3) relu maxpool(2) conv(16,3) relu conv(16,3,stride=2,pad=valid) relu avgpool(2) fc(16) relu fc(10)"
N, H, W, C, CLASSES = 6, 12, 12, 1, 10
# Adam's epsilon is larger than training's 1e-8 on purpose: a third of conv2's gradients here are
# below 1e-7 (channels that the ReLU and pool leave almost dead), and with eps 1e-8 Adam's first
# step moves such a weight by up to lr times g / (|g| + eps), so float32 rounding of a near-zero
# gradient becomes a difference of lr / 4. With eps 1e-4 the step is smooth in g and the weights
# after Adam can be compared as tightly as the gradients. The update formula is the same code.
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-4
ADAMW_DECAY, SGD_LR, SGD_MOMENTUM, SGD_DECAY = 0.05, 0.05, 0.9, 0.01

torch.manual_seed(20261202)
torch.set_default_dtype(torch.float64)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(16, 16, 3, stride=2, padding=0)
        self.fc1 = torch.nn.Linear(16, 16)
        self.fc2 = torch.nn.Linear(16, 10)

    def forward(self, x):  # x: NHWC, as ptrain holds it
        x = x.permute(0, 3, 1, 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        x = torch.nn.functional.avg_pool2d(torch.relu(self.conv3(x)), 2)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # ptrain flattens (h, w, c)
        return self.fc2(torch.relu(self.fc1(x)))


net = Net()
with torch.no_grad():  # He-scaled weights and small biases, so every ReLU sees both signs
    for m in [net.conv1, net.conv2, net.conv3, net.fc1, net.fc2]:
        fan_in = m.weight[0].numel()
        m.weight.normal_(0, (2 / fan_in) ** 0.5)
        m.bias.uniform_(-0.1, 0.1)
x = torch.rand(N, H, W, C)
labels = torch.arange(N) % CLASSES

names = ["conv1", "conv2", "conv3", "fc1", "fc2"]


def ptrain_layout(name, p, bias):
    if bias:
        return p
    return p.permute(2, 3, 1, 0) if name.startswith("conv") else p.t()


def params(prefix, get):
    out = {}
    for n in names:
        m = getattr(net, n)
        out[f"{prefix}{n}.weight"] = ptrain_layout(n, get(m.weight), False)
        out[f"{prefix}{n}.bias"] = get(m.bias)
    return out


tensors = {"input": x, "labels": labels.to(torch.float64)}
tensors.update(params("weights.", lambda p: p.detach().clone()))
logits = net(x)
loss = torch.nn.functional.cross_entropy(logits, labels)
loss.backward()
tensors["logits"] = logits.detach()
tensors["loss"] = loss.detach().reshape(1)
tensors.update(params("grad.", lambda p: p.grad.detach().clone()))
start = {k: v.clone() for k, v in net.state_dict().items()}
runs = [
    ("", lambda net: torch.optim.Adam(net.parameters(), lr=LR, betas=BETAS, eps=EPS), None),
    ("adamw_", lambda net: torch.optim.AdamW(net.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=ADAMW_DECAY),
     lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)),
    ("sgd_", lambda net: torch.optim.SGD(net.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM, weight_decay=SGD_DECAY),
     lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)),
]


def optimizer_runs(net, x, start, params, tensors, after_adam=None):
    """Each optimizer of `runs` from `start` for 3 steps on (x, labels): the weights after steps 1
    and 3 into `tensors`, in ptrain's layouts (`params`); `after_adam` runs after Adam's 3 steps."""
    for prefix, make, schedule in runs:
        net.load_state_dict(start)
        net.zero_grad()
        opt = make(net)
        sched = schedule(opt) if schedule else None
        for step in range(1, 4):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), labels).backward()
            opt.step()
            if sched:
                sched.step()
            if step in (1, 3):
                tensors.update(params(f"{prefix}step{step}.", lambda p: p.detach().clone()))
        if prefix == "" and after_adam:
            after_adam()


optimizer_runs(net, x, start, params, tensors)



def write(out, spec, h, w, c, tensors):
    header, blobs, offset = {"__metadata__": {"spec": spec, "input": f"{h}x{w}x{c}", "classes": str(CLASSES),
                                              "lr": repr(LR), "beta1": repr(BETAS[0]), "beta2": repr(BETAS[1]),
                                              "epsilon": repr(EPS), "adamw_decay": repr(ADAMW_DECAY), "sgd_lr": repr(SGD_LR),
                                              "sgd_momentum": repr(SGD_MOMENTUM), "sgd_decay": repr(SGD_DECAY),
                                              "torch": torch.__version__}}, [], 0
    for name, t in tensors.items():
        data = t.to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    print(f"wrote {out}: {len(tensors)} tensors, loss {tensors['loss'].item():.6f}")


folder = sys.argv[1] if len(sys.argv) > 1 else "Tests/TrainingTests"
write(folder + "/pytorch-reference.safetensors", SPEC, H, W, C, tensors)


# The ResNet-style network: batch norm in training mode after convs (one without a bias in each
# place ptrain computes a conv differently) and after a dense layer, an identity and a projected
# (1x1, stride 2) residual block, global average pooling. Its running statistics after 3 Adam
# steps and the eval-mode logits with them are recorded too.
RES_SPEC = ("conv(16,3,bias=false) bn relu res(conv(16,3,bias=false) bn relu conv(16,3,bias=false) bn) relu "
            "res(conv(32,3,stride=2,bias=false) bn relu conv(32,3,bias=false) bn) relu gap fc(16,bias=false) bn relu fc(10)")
RN, RH, RW = 8, 12, 12
torch.manual_seed(20261206)


# The torch.nn model comes from ptrain_checkpoint.py's builder (the one its eval uses), so this
# also checks the builder's names, SAME padding and shortcut stride against ptrain.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptrain_checkpoint import torch_network


net = torch_network(RES_SPEC, (RH, RW, 1))
with torch.no_grad():  # γ and β away from 1 and 0, biases small, so every path carries generic values
    for name, m in net.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5)
            if m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.weight.uniform_(0.8, 1.2)
            m.bias.uniform_(-0.2, 0.2)
x = torch.rand(RN, RH, RW, 1)
labels = torch.arange(RN) % CLASSES
def resnet_reference(net, x):
    """The reference computations on `net` (float64 or a float32 copy), as a dict of tensors."""
    params = {n: p for n, p in net.named_parameters()}

    def res_params(prefix, get):
        return {prefix + n: (get(p).permute(2, 3, 1, 0) if p.dim() == 4 else get(p).t() if n.startswith("fc") and n.endswith("weight") else get(p))
                for n, p in params.items()}

    tensors = {}
    tensors.update(res_params("weights.", lambda p: p.detach().clone()))
    start = {k: v.clone() for k, v in net.state_dict().items()}  # before any forward: fresh running statistics
    net.train()
    logits = net(x)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    tensors["logits"], tensors["loss"] = logits.detach(), loss.detach().reshape(1)
    tensors.update(res_params("grad.", lambda p: p.grad.detach().clone()))
    def after_adam():
        tensors.update({"state.step3." + n: b.detach().clone().to(torch.float64) for n, b in net.named_buffers()})
        net.eval()
        with torch.no_grad():
            tensors["eval_logits.step3"] = net(x)
        net.train()

    optimizer_runs(net, x, start, res_params, tensors, after_adam)
    return tensors


# PyTorch's own float32 computation of the same, from the same start: how far a float32
# implementation lands from float64 on this network is what the test allows ptrain (times 4): its
# tolerance for each tensor is measured, not chosen.
net32 = copy.deepcopy(net).float()
tensors = {"input": x, "labels": labels.to(torch.float64)}
tensors.update(resnet_reference(net, x.permute(0, 3, 1, 2)))  # the builder's model takes NCHW
for k, v in resnet_reference(net32, x.float().permute(0, 3, 1, 2)).items():
    tensors["float32_error." + k] = (v.detach().to(torch.float64) - tensors[k]).abs().max().reshape(1)
write(folder + "/pytorch-reference-resnet.safetensors", RES_SPEC, RH, RW, 1, tensors)
