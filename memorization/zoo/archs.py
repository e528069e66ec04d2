"""The small networks of the zoos, by name: ``build_arch({"name": "mlp", "hidden": [32]}, input_shape, 10)``.

An arch is a JSON-able dict (stored in every zoo file) so a zoo can always rebuild its network.
None of these networks has buffers or normalisation with running statistics, so the state dict
is exactly the parameters and a model is a pure function of its flattened parameter vector
(what `torch.func.functional_call` + `vmap` needs, and what generators produce).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from bias.core.registry import Registry
from memorization.zoo.spec import ParamSpec

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # negative slope 0.01, as torch's default
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}

ARCHS: Registry[Callable[..., nn.Module]] = Registry("zoo architecture", attr=None)
register_arch = ARCHS.register  # class decorator: @register_arch("mlp")


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@register_arch("mlp")
class ZooMLP(nn.Module):
    """Flatten -> (Linear -> activation) per hidden width -> Linear.

    Parameters are ``layers.{i}.weight`` / ``layers.{i}.bias`` for i = 0..len(hidden) (the last is
    the head), so hidden units of layer i are the rows of ``layers.{i}.weight`` (what the
    permutation alignment in `memorization.metrics.alignment` matches).
    G.pt's MNIST MLP is ``hidden=[10]`` on 784 inputs (7,960 parameters).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (32,),
                 activation: str = "relu") -> None:
        super().__init__()
        width = math.prod(input_shape)
        layers = []
        for h in hidden:
            if int(h) < 1:
                raise ValueError(f"hidden widths must be positive, got {list(hidden)}")
            layers.append(nn.Linear(width, int(h)))
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.ModuleList(layers)
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)


@register_arch("hyperrep_cnn")
class HyperRepCNN(nn.Module):
    """The Hyper-Representations zoo CNN: conv 1->8 k5, maxpool 2, conv 8->6 k5, maxpool 2, conv 6->4 k2,
    flatten, fc ->20, fc 20->10, LeakyReLU after every layer but the last.

    On 1x28x28 MNIST it has exactly the published 2,464 parameters (fc 36->20). Adaptations, all
    derived from the task's input shape: ``in_channels`` is the task's channel count (3 for the
    planted RGB images: 8*3*25 conv weights instead of 8*25; 2,717 parameters at 28x28 with 3 classes); the
    first fc layer takes whatever 4 x H' x W' the convolutions leave (36 at 28x28: the digits and
    planted CNN configs ask their task for 28x28 inputs; 16x16 is too small for these kernels
    and raises); 1-D inputs (MNIST-1D, 1x40) use Conv1d/MaxPool1d with the
    same kernel sizes (40 -> 36 -> 18 -> 14 -> 7 -> 6, fc 24->20).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (8, 6, 4),
                 kernels: Sequence[int] = (5, 5, 2), hidden: int = 20, activation: str = "leaky_relu") -> None:
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise ValueError(f"hyperrep_cnn needs (C, L) or (C, H, W) inputs, got {tuple(input_shape)}")
        conv = nn.Conv1d if len(input_shape) == 2 else nn.Conv2d
        pool = nn.MaxPool1d if len(input_shape) == 2 else nn.MaxPool2d
        spatial = list(input_shape[1:])
        layers: list[nn.Module] = []
        cin = int(input_shape[0])
        for i, (cout, k) in enumerate(zip(channels, kernels)):
            layers += [conv(cin, int(cout), int(k)), _activation(activation)]
            spatial = [s - int(k) + 1 for s in spatial]
            if i < len(channels) - 1:
                layers.append(pool(2))
                spatial = [s // 2 for s in spatial]
            if min(spatial) < 1:
                raise ValueError(f"input {tuple(input_shape)} is too small for hyperrep_cnn's kernels {list(kernels)}")
            cin = int(cout)
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(cin * math.prod(spatial), int(hidden))
        self.act = _activation(activation)
        self.fc2 = nn.Linear(int(hidden), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.features(x).flatten(1))))


def build_arch(arch: Mapping[str, Any], input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """``arch = {"name": ..., **kwargs}`` -> a fresh module (initialised from torch's global RNG)."""
    kwargs = dict(arch)
    name = kwargs.pop("name", None)
    for k, v in list(kwargs.items()):
        if isinstance(v, list):
            kwargs[k] = tuple(v)
    return ARCHS.create(str(name), tuple(input_shape), int(num_classes), **kwargs)


def init_params(arch: Mapping[str, Any], input_shape: Sequence[int], num_classes: int, seed: int) -> torch.Tensor:
    """The flat initial parameters of model `seed`: torch's default init drawn from ``manual_seed(seed)``.

    Uses a forked RNG, so the global torch RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_arch(arch, input_shape, num_classes)
    return ParamSpec.from_module(model).flatten(dict(model.state_dict())).detach()
