"""A tiny registry: one instance per component kind, mapping a name to a factory."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from mmfuse.errors import ConfigError

T = TypeVar("T")


def import_modules(package: str, path: list[str]) -> None:
    """Import every module of a package, so that what they register is registered: adding a
    component is adding its file."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


class Registry(Generic[T]):
    """Maps names to factories of one component kind (vision encoders, fusions, heads, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._summaries: dict[str, str] = {}

    def register(self, name: str, summary: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._factories[name] = factory
            self._summaries[name] = summary or (factory.__doc__ or "").strip().split("\n")[0]
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            close = difflib.get_close_matches(name, self._factories, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} '{name}'. Known: {', '.join(self.names())}.{hint}"
            )
        return self._factories[name]

    def names(self) -> list[str]:
        return sorted(self._factories)

    def summary(self, name: str) -> str:
        return self._summaries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._factories
