"""What every weight generator is, and the name-based registry: a name is the whole API.

    @register_generator("pdiff")
    class PDiff(WeightGenerator): ...

    gen = create_generator("pdiff", ae_steps=200).fit(zoo, seed=0)
    samples = gen.sample(200, seed=1)          # (200, P) float32 on the CPU, in zoo.spec order
    list_generators()

Like a scikit-learn estimator, a generator takes every parameter in ``__init__`` (defaults = the
published values, listed with comments in ``configs/memorize/generator/<name>.yaml``), learns in
`fit` and keeps no global state. All randomness comes from the ``seed`` arguments of `fit` and
`sample`; what a sampler picked (training indices, say) is kept in ``self.last_sample`` so a run
can record it.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from bias.core.registry import Registry, UnknownNameError
from memorization.zoo.store import Zoo

G = TypeVar("G", bound=type["WeightGenerator"])


class UnknownGeneratorError(UnknownNameError):
    """No weight generator is registered under this name."""


class NotFittedError(RuntimeError):
    pass


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> the GPU when there is one, else the CPU; anything else as torch reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class WeightGenerator:
    """Base class: ``fit(zoo, seed)`` then ``sample(n, seed)``.

    Subclasses implement `_fit` and `_sample`; the base class checks shapes, moves results to the
    CPU as float32 and remembers the zoo's parameter count.
    """

    name: ClassVar[str] = ""
    #: How many samples the published study drew with this method (used when `sample` gets n=None).
    default_num_samples: ClassVar[int] = 100

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._num_params: int | None = None
        self.last_sample: dict[str, Any] = {}

    # -- public API -------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Constructor parameters, as stored with a run (fitted state ends in ``_``, as in scikit-learn)."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and not k.endswith("_") and k != "last_sample"}

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def is_fitted(self) -> bool:
        return self._num_params is not None

    def fit(self, zoo: Zoo, seed: int = 0) -> WeightGenerator:
        if len(zoo) == 0:
            raise ValueError(f"{self.name}: the zoo is empty; build a zoo with at least one model first")
        if not torch.isfinite(zoo.params).all():
            bad = (~torch.isfinite(zoo.params)).any(1).nonzero().flatten().tolist()
            raise ValueError(f"{self.name}: zoo models {bad[:10]} have non-finite parameters; drop them first")
        self._fit(zoo, seed)
        self._num_params = zoo.spec.numel()
        return self

    def sample(self, n: int | None = None, seed: int = 0) -> Tensor:
        """``(n, P)`` float32 CPU tensor of generated flat parameters (zoo.spec order)."""
        if not self.is_fitted:
            raise NotFittedError(f"{self.name}: call fit(zoo) before sample()")
        n = self.default_num_samples if n is None else int(n)
        if n < 1:
            raise ValueError(f"{self.name}: n must be >= 1, got {n}")
        with torch.no_grad():
            out = self._sample(n, seed)
        out = out.detach().to("cpu", torch.float32)
        if out.shape != (n, self._num_params):
            raise AssertionError(f"{self.name} produced {tuple(out.shape)}, expected {(n, self._num_params)}")
        return out

    def reference_params(self, zoo: Zoo) -> Tensor:
        """The set novelty is measured against: the training weights (hyperreps: reconstructions)."""
        return zoo.params

    # -- to implement -------------------------------------------------------------------------
    def _fit(self, zoo: Zoo, seed: int) -> None:
        raise NotImplementedError

    def _sample(self, n: int, seed: int) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def cpu_generator(seed: int) -> torch.Generator:
    """Random draws come from a seeded CPU generator, so CPU and GPU runs pick the same things."""
    return torch.Generator().manual_seed(int(seed))


GENERATORS: Registry[type[WeightGenerator]] = Registry(
    "generator", error=UnknownGeneratorError,
    hint="Register a new one with @register_generator and add configs/memorize/generator/<name>.yaml.")

register_generator = GENERATORS.register  # class decorator: @register_generator("pdiff")
list_generators = GENERATORS.names
get_generator_class = GENERATORS.get


def create_generator(name: str, /, **params: Any) -> WeightGenerator:
    """``create_generator("noise", sigma=0.04)``; a group config with its own ``name`` key can be splatted in."""
    if params.pop("name", name) != name:
        raise ValueError(f"create_generator({name!r}) was given a config for a different generator")
    return GENERATORS.create(name, **params)
