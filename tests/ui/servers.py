"""Serve an ASGI app on a free loopback port in a background thread, find closed ports, hold silent ones.

The UI tests talk to real HTTP servers (the inference app, the Airflow stub)
over loopback, exactly as the UI does in the stack.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from covertype.loopback import free_port, serve_in_thread

__all__ = ["SilentPort", "closed_url", "free_port", "serve", "silent_port"]


def closed_url() -> str:
    """A loopback URL that refuses connections: the "service is down" case."""
    return f"http://127.0.0.1:{free_port()}"


def serve(app: Any) -> AbstractContextManager[str]:
    """Run ``app`` (its lifespan too: the inference app loads its model there) until the block ends."""
    return serve_in_thread(app, lifespan="on")


@dataclass(frozen=True)
class SilentPort:
    """A loopback port whose connections are accepted (by the kernel) and never answered."""

    url: str
    listener: socket.socket

    def release(self) -> None:
        """Close the port: the connections waiting on it are reset, so a client blocked on one fails at once."""
        self.listener.close()


@contextmanager
def silent_port() -> Iterator[SilentPort]:
    """A service that hangs: it takes the connection and never answers, until ``release`` or the block ends."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield SilentPort(f"http://127.0.0.1:{listener.getsockname()[1]}", listener)
    finally:
        listener.close()
