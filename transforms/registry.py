"""Name-based registry of transforms: a name is the whole API.

    @register_transform("canny")
    class Canny(Transform): ...

    create_transform("canny", low=50)
    list_transforms()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from transforms.base import Transform

_REGISTRY: dict[str, type[Transform]] = {}
T = TypeVar("T", bound=type[Transform])


class UnknownTransformError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register_transform(name: str) -> Callable[[T], T]:
    """Class decorator that makes a transform available by `name`."""

    def decorator(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"transform {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _load_builtin() -> None:
    import transforms.builtin  # noqa: F401  (registers every built-in transform)


def list_transforms() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_transform_class(name: str) -> type[Transform]:
    _load_builtin()
    if name not in _REGISTRY:
        raise UnknownTransformError(
            f"unknown transform {name!r}; available: {', '.join(sorted(_REGISTRY))}. "
            "Register a new one with @register_transform and add configs/transform/<name>.yaml."
        )
    return _REGISTRY[name]


def create_transform(name: str, **params: Any) -> Transform:
    cls = get_transform_class(name)
    try:
        return cls(**params)
    except TypeError as err:
        raise TypeError(f"bad parameters for transform {name!r}: {err}") from err
