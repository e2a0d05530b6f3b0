"""The platform's concrete jobs. ``registry()`` is every kind a worker of this platform runs."""

from __future__ import annotations

from streams.registry import Registry


def registry() -> Registry:
    """The platform registry (today: the demo kinds)."""
    from handlers import demo

    return demo.registry()
