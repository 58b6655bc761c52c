"""Run servers on loopback for the tests and benchmarks: an ASGI app in a thread, or a subprocess.

The tests and the benchmarks run the data API replica and the inference
service in-process but talk to them through real sockets, exactly as the DAG
and the UI do in the stack. One helper serves them all. It needs ``uvicorn``
(the ``api`` extra); nothing in the services imports this module.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import uvicorn

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on right now (the OS picks it; it is released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve_in_thread(
    app: Any, *, lifespan: Literal["on", "off"] = "off", start_timeout_s: float = 30.0
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port until the block ends; yield its base URL.

    The socket is bound here and handed to uvicorn, so no other process can
    take the port between choosing it and listening on it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server on port {port} stopped during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {port} did not start within {start_timeout_s} s")
            time.sleep(0.01)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def stop_process_group(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Stop a server started with ``start_new_session=True`` and every worker it spawned."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)
