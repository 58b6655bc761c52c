"""Serve an ASGI app on a free loopback port in a background thread, and find closed ports.

The UI tests talk to real HTTP servers (the inference app, the Airflow stub)
over loopback, exactly as the UI does in the stack.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from covertype.loopback import free_port, serve_in_thread

__all__ = ["closed_url", "free_port", "serve"]


def closed_url() -> str:
    """A loopback URL that refuses connections: the "service is down" case."""
    return f"http://127.0.0.1:{free_port()}"


def serve(app: Any) -> AbstractContextManager[str]:
    """Run ``app`` (its lifespan too: the inference app loads its model there) until the block ends."""
    return serve_in_thread(app, lifespan="on")
