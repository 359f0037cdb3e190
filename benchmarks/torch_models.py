"""PyTorch references: SpikingJelly 2.0 multi-step spiking VGG-11 and its ANN twin.

Same network as rsc_jax's ``vgg11``: conv3x3 (no bias) - BatchNorm - LIF/ReLU units with
2x2 average pooling, global average, one dense layer, logits averaged over T. The LIF
is SpikingJelly's ``MultiStepLIFNode`` (``neuron.LIFNode(step_mode='m')``, its torch path; on CUDA when there is a GPU)
with ``decay_input=False, v_reset=0``: u_t = (1 - 1/tau) v + I_t, hard reset, sigmoid
surrogate (alpha 4) -- the same math as ``rsc_jax.neurons.lif``. If SpikingJelly is not
installed, ``PlainLIF`` (a faithful re-implementation of that torch backend, labelled
``torch-lif`` in the results) is used instead.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import torch
import torch.nn as tnn

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
# The torch references run where JAX does when there is a GPU: on CUDA (SpikingJelly's
# torch LIF path on the GPU) with a synchronisation after each call, so the timings
# include the kernels and not only their launch. Not exercised here: no GPU was lent.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def have_spikingjelly() -> bool:
    try:
        import spikingjelly.activation_based  # noqa: F401
        return True
    except Exception:
        return False


class _SigmoidSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.alpha * x)
        return g * ctx.alpha * s * (1 - s), None


class PlainLIF(tnn.Module):
    """Multi-step LIF over [T, B, ...] (SpikingJelly's torch backend, re-implemented)."""
    def __init__(self, tau=2.0, v_th=1.0, alpha=4.0):
        super().__init__()
        self.decay, self.v_th, self.alpha = 1.0 - 1.0 / tau, v_th, alpha

    def forward(self, x):
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            h = self.decay * v + x[t]
            s = _SigmoidSpike.apply(h - self.v_th, self.alpha)
            v = h * (1 - s)
            out.append(s)
        return torch.stack(out)


class SeqToANN(tnn.Module):
    """[T, B, ...] -> fold -> module -> unfold (SpikingJelly's SeqToANNContainer)."""
    def __init__(self, *mods):
        super().__init__()
        self.m = tnn.Sequential(*mods)

    def forward(self, x):
        T, B = x.shape[:2]
        y = self.m(x.flatten(0, 1))
        return y.reshape(T, B, *y.shape[1:])


def spiking_vgg11(num_classes: int = 10, use_sj: bool | None = None) -> tnn.Module:
    use_sj = have_spikingjelly() if use_sj is None else use_sj
    mods, c = [], 3
    for v in VGG11:
        if v == "M":
            mods.append(SeqToANN(tnn.AvgPool2d(2, 2)))
            continue
        mods.append(SeqToANN(tnn.Conv2d(c, v, 3, padding=1, bias=False), tnn.BatchNorm2d(v)))
        if use_sj:
            from spikingjelly.activation_based import neuron, surrogate
            mods.append(neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0,
                                       surrogate_function=surrogate.Sigmoid(alpha=4.0),
                                       detach_reset=False, step_mode="m"))
        else:
            mods.append(PlainLIF())
        c = v

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(*mods)
            self.fc = tnn.Linear(c, num_classes)

        def forward(self, x):                      # x: [T, B, C, H, W]
            h = self.features(x).mean(dim=(3, 4))  # [T, B, C]
            return self.fc(h).mean(0)

    net = Net().to(DEVICE)
    net.uses_spikingjelly = use_sj
    return net


def ann_vgg11(num_classes: int = 10) -> tnn.Module:
    mods, c = [], 3
    for v in VGG11:
        if v == "M":
            mods.append(tnn.AvgPool2d(2, 2))
            continue
        mods += [tnn.Conv2d(c, v, 3, padding=1, bias=False), tnn.BatchNorm2d(v), tnn.ReLU()]
        c = v
    return tnn.Sequential(*mods, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(c, num_classes)).to(DEVICE)


def _reset(net):
    if getattr(net, "uses_spikingjelly", False):
        from spikingjelly.activation_based import functional
        functional.reset_net(net)


def train_runner(net: tnn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net.train()

    def run():
        opt.zero_grad(set_to_none=True)
        loss = tnn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        _reset(net)
        _sync()
    return run


def infer_runner(net: tnn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run():
        net.eval()
        with torch.no_grad():
            net(x)
        _reset(net)
        _sync()
    return run


def inputs(T: int | None, B: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (B, 3, 32, 32) if T is None else (T, B, 3, 32, 32)
    x = torch.from_numpy(rng.random(shape, np.float32)).to(DEVICE)
    y = torch.from_numpy(rng.integers(0, 10, B).astype(np.int64)).to(DEVICE)
    return x, y
