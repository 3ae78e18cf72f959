"""A registry of named classes that a config setting picks by name (``images.backend`` picks a renderer).

Why here, in the core: the config validates a name against the registry when it is loaded, and the config may not
import the stages that hold the classes. So each entry names its class as ``"module:Class"`` and is imported on
first use (what open_clip's model registry does with its config files, and entry points do for plugins); a
test or a plugin registers its own class object with ``register``.
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> class, for the setting ``field``; an entry is the class or ``"module:Class"`` (imported lazily)."""

    def __init__(self, field: str, entries: dict[str, str | type[T]]) -> None:
        self.field = field
        self._entries = dict(entries)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def check(self, name: str) -> str:
        """``name`` if registered; a ValueError listing the known names otherwise (pydantic makes it a field error)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.field} {name!r}; known: {', '.join(self.names())}")
        return name

    def register(self, name: str, target: str | type[T]) -> None:
        """Add ``name`` (a plugin's or a test's class, or its ``"module:Class"``); a name already taken is an error."""
        if name in self._entries:
            raise ValueError(f"{self.field} {name!r} is already registered ({self._entries[name]!r})")
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        """Drop ``name`` again (a test's class, once the test is done)."""
        del self._entries[name]

    def load(self, name: str) -> type[T]:
        """The class registered as ``name``, imported on first use."""
        target = self._entries[self.check(name)]
        if isinstance(target, str):
            module, _, attribute = target.partition(":")
            target = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return target
