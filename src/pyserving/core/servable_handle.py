"""ServableRequest (which version a caller wants) and ServableHandle (a pinned version).

A handle keeps its version from being unloaded until it is released: unloading waits
for every handle of that version to be released, while new requests already go to
the next version. Release exactly once (use it as a context manager).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pyserving.core.servable_id import ServableId

__all__ = ["ServableRequest", "ServableHandle"]


def _nothing() -> None:
    pass


@dataclass(frozen=True, slots=True)
class ServableRequest:
    name: str
    version: int | None = None  # None: the latest (highest) available version

    @classmethod
    def latest(cls, name: str) -> "ServableRequest":
        return cls(name, None)

    @classmethod
    def specific(cls, name: str, version: int) -> "ServableRequest":
        return cls(name, version)

    def __str__(self) -> str:
        # TF Serving's wording, which clients see in NOT_FOUND messages.
        if self.version is None:
            return f"Latest({self.name})"
        return f"Specific({self.name}, {self.version})"


class ServableHandle:
    __slots__ = ("id", "servable", "_release")

    def __init__(self, id: ServableId, servable: Any, release: Callable[[], None]) -> None:
        self.id = id
        self.servable = servable
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def transfer(self) -> Callable[[], None]:
        """Hand the duty to release to whoever calls the returned function (exactly once,
        e.g. the worker running with the servable); `release()` here becomes a no-op."""
        release, self._release = self._release, None
        return release if release is not None else _nothing

    def __enter__(self) -> "ServableHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
