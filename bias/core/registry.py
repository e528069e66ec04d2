"""One name -> class (or factory) registry, used for transforms, data sources, weight generators, zoo
architectures and zoo tasks: a name in a config is the whole API, and adding one is a decorator.

    TRANSFORMS = Registry("transform", hint="Register a new one with ...")

    @TRANSFORMS.register("canny")
    class Canny(Transform): ...

    TRANSFORMS.create("canny", low=50); TRANSFORMS.names()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from bias.core.errors import BiasError

T = TypeVar("T")


class UnknownNameError(BiasError, KeyError):
    """A name no entry is registered under; the message lists what is."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Entries by name. `attr` is set on a registered class to its name (e.g. `Transform.name`); `error`
    is raised for an unknown name, with `hint` appended to the message.

    The built-in entries register themselves when their package is imported (the package's
    `__init__` imports its modules, as timm's model registry does), so a registry never imports
    the layers above it."""

    def __init__(self, what: str, attr: str | None = "name", hint: str = "",
                 error: Callable[[str], Exception] = UnknownNameError) -> None:
        self.what, self.attr, self.hint, self.error = what, attr, hint, error
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the class or factory available as `name` (twice with another entry is an error)."""

        def decorator(entry: T) -> T:
            old = self._entries.get(name)
            if old is not None and old is not entry:
                raise ValueError(f"{self.what} {name!r} is already registered by {getattr(old, '__qualname__', old)}")
            if self.attr is not None and isinstance(entry, type):
                setattr(entry, self.attr, name)
            self._entries[name] = entry
            return entry

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> T:
        if name not in self._entries:
            hint = f". {self.hint}" if self.hint else ""
            raise self.error(f"unknown {self.what} {name!r}; available: {', '.join(sorted(self._entries))}{hint}")
        return self._entries[name]

    def create(self, name: str, /, *args: Any, **params: Any) -> Any:
        """`get(name)(*args, **params)`; a parameter the entry does not take is a clear TypeError."""
        entry = self.get(name)
        try:
            return entry(*args, **params)
        except TypeError as err:
            raise TypeError(f"bad parameters for {self.what} {name!r}: {err}") from err

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
