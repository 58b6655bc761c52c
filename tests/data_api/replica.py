"""Helpers for the replica's tests: settings, a hand-driven clock, and a real server on loopback."""

from __future__ import annotations

import csv
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from data_api.settings import DataApiSettings

ROWS_IN_SHARED_CSV = 15_120
BATCH_SIZE = ROWS_IN_SHARED_CSV // 10
PORTION_SIZE = round(BATCH_SIZE * 0.1)


def make_settings(csv_path: Path | None, state_dir: Path, **overrides: object) -> DataApiSettings:
    """Settings given in full, so that no variable of the test runner's environment leaks in."""
    values: dict[str, object] = {
        "covertype_csv": csv_path,
        "data_api_state_dir": state_dir,
        "min_update_time": 0,
        "portion_fraction": 0.1,
        "data_api_seed": 7,
        "data_api_groups": 10,
    }
    values.update(overrides)
    return DataApiSettings(**values)


class FakeClock:
    """A clock the test moves by hand: window behaviour without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def read_rows(csv_path: Path) -> list[tuple[str, ...]]:
    """The file's data rows as tuples of strings, read independently of the replica's loader."""
    with csv_path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [tuple(row) for row in reader]


def free_loopback_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server on a free loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
