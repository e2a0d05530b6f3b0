"""Handler registration as plain data, and the registry a worker runs.

Owns: :class:`Handler` (payload type + async function + options), :class:`Backoff`
and :class:`Registry`, validated at construction (start-up), with no I/O at import.
Invariants: kinds are unique; every payload type is a msgspec Struct; every queue
name is legal; timeouts and attempt counts are positive.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from streams.events import Priority
from streams.keys import PRIORITIES, validate_queue

if TYPE_CHECKING:
    from streams.context import JobContext

P = TypeVar("P", bound=msgspec.Struct)


class RegistryError(ValueError):
    """The registry is not valid (raised at start-up, never later)."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base_s * factor**(n-1)``, capped, times U(1-jitter, 1)."""

    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 3600.0
    jitter: float = 0.5

    def delay_ms(self, failed_attempt: int, rng: random.Random | None = None) -> int:
        """Delay before the attempt after ``failed_attempt`` (1-based), in ms."""
        raw = min(self.max_s, self.base_s * self.factor ** max(0, failed_attempt - 1))
        u = (rng or random).uniform(1.0 - self.jitter, 1.0)
        return max(0, int(raw * u * 1000))


@dataclass(frozen=True)
class Handler(Generic[P]):
    """One job kind: its payload type, its function, and its default options."""

    kind: str
    payload_type: type[P]
    fn: Callable[[JobContext, P], Awaitable[Any]]
    queue: str = "default"
    priority: Priority = "medium"
    max_attempts: int = 3
    timeout_s: float = 300.0
    backoff: Backoff = field(default_factory=Backoff)

    def validate(self) -> None:
        """Raise :class:`RegistryError` if this handler is not well formed."""
        where = f"handler {self.kind!r}"
        if not self.kind or len(self.kind) > 128:
            raise RegistryError(f"{where}: kind must be 1-128 characters")
        if not (
            isinstance(self.payload_type, type) and issubclass(self.payload_type, msgspec.Struct)
        ):
            raise RegistryError(f"{where}: payload_type must be a msgspec.Struct subclass")
        if not inspect.iscoroutinefunction(self.fn):
            raise RegistryError(f"{where}: fn must be an async function")
        try:
            validate_queue(self.queue)
        except ValueError as exc:
            raise RegistryError(f"{where}: {exc}") from None
        if self.priority not in PRIORITIES:
            raise RegistryError(f"{where}: priority must be one of {PRIORITIES}")
        if self.max_attempts < 1 or self.timeout_s <= 0:
            raise RegistryError(f"{where}: max_attempts >= 1 and timeout_s > 0 required")


class Registry:
    """The handlers a process knows, by kind."""

    def __init__(self, handlers: Iterable[Handler[Any]]) -> None:
        self._by_kind: dict[str, Handler[Any]] = {}
        for h in handlers:
            h.validate()
            if h.kind in self._by_kind:
                raise RegistryError(f"kind {h.kind!r} registered twice")
            self._by_kind[h.kind] = h

    def get(self, kind: str) -> Handler[Any] | None:
        return self._by_kind.get(kind)

    def __contains__(self, kind: object) -> bool:
        return kind in self._by_kind

    def __iter__(self) -> Iterator[Handler[Any]]:
        return iter(self._by_kind.values())

    def __len__(self) -> int:
        return len(self._by_kind)

    @property
    def queues(self) -> list[str]:
        """Every queue some handler is routed to, sorted."""
        return sorted({h.queue for h in self._by_kind.values()})

    def merged(self, other: Registry) -> Registry:
        """A registry holding the handlers of both (kinds must not clash)."""
        return Registry([*self, *other])
