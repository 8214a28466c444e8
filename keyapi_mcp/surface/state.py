"""The running server's state as the surface reads it.

Tools and resource templates get `AppState` from the SDK's lifespan context; the static `keyapi://usage`
resource and completions get no context in the SDK, so they read `LiveState`, which the lifespan fills.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from keyapi_mcp.config import Settings
from keyapi_mcp.core.service import ProductsService


@dataclass(frozen=True)
class AppState:
    settings: Settings
    service: ProductsService
    demo: bool


class LiveState:
    """The state of the server's running lifespan (the latest, should the SDK ever run two at once)."""

    def __init__(self) -> None:
        self._running: list[AppState] = []

    def get(self) -> AppState | None:
        """The running state, or None between the server's construction and its start."""
        return self._running[-1] if self._running else None

    @contextmanager
    def serving(self, state: AppState) -> Iterator[AppState]:
        self._running.append(state)
        try:
            yield state
        finally:
            self._running.remove(state)
