"""Start the app under test, and wait for what it does in the background, through its own endpoints.

The app starts without waiting for the registry: its first check runs in the
watcher thread, and until it ends ``/health`` says ``pending``. A test that
expects what that check found waits for it here, by asking ``/health`` as a
client would; no test reaches into the holder to wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from starlette.types import ASGIApp

# Polls of /health before giving up on the first check: ~60 s, a model load on two busy cores takes seconds.
FIRST_CHECK_POLLS = 1200


def wait_for(condition: Callable[[], bool], attempts: int = 200, pause_s: float = 0.05) -> bool:
    """Poll ``condition`` a bounded number of times (no assertion on time itself)."""
    for _ in range(attempts):
        if condition():
            return True
        time.sleep(pause_s)
    return condition()


def first_check_done(get_health: Callable[[], dict[str, Any]]) -> bool:
    """Wait until ``/health`` (as ``get_health`` fetches it) reports a finished registry check."""
    return wait_for(lambda: get_health()["registry_checked_at"] is not None, attempts=FIRST_CHECK_POLLS)


@contextmanager
def checked_client(app: ASGIApp) -> Iterator[TestClient]:
    """``app`` started (its lifespan run) and its first registry check finished, as /health reports it."""
    with TestClient(app) as client:
        assert first_check_done(lambda: client.get("/health").json()), client.get("/health").json()
        yield client
