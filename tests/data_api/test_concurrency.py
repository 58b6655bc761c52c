"""Concurrent requests against real uvicorn servers: no batch is skipped or served twice as "new"."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi import FastAPI

from tests.data_api.replica import serve_in_thread

REQUESTS = 40
THREADS = 16


def hammer(base_urls: list[str], group: int = 1) -> Counter[int | str]:
    """Fire REQUESTS requests from THREADS threads at once, spread over the servers; count the outcomes."""
    urls = itertools.cycle(base_urls)
    targets = [next(urls) for _ in range(REQUESTS)]

    def one(base_url: str) -> int | str:
        response = httpx.get(f"{base_url}/data", params={"group_number": group}, timeout=60, trust_env=False)
        if response.status_code == 200:
            return response.json()["batch_number"]
        return f"{response.status_code}: {response.json()['detail'][:19]}"

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return Counter(pool.map(one, targets))


def assert_each_batch_once_then_complete(outcomes: Counter[int | str]) -> None:
    # MIN_UPDATE_TIME=0: every request opens the next batch, so each batch is served exactly once.
    assert outcomes == Counter({**dict.fromkeys(range(1, 11), 1), "400: collection complete": REQUESTS - 10})


def test_concurrent_requests_get_batches_1_to_10_once_each_then_400(build_app: Callable[..., FastAPI]) -> None:
    with serve_in_thread(build_app()) as base_url:
        assert_each_batch_once_then_complete(hammer([base_url]))


def test_two_app_instances_on_one_state_dir_share_the_sequence(build_app: Callable[..., FastAPI]) -> None:
    # Two instances have separate in-process locks: only SQLite's write transaction keeps them in step,
    # as it would two uvicorn workers.
    with serve_in_thread(build_app()) as first, serve_in_thread(build_app()) as second:
        assert_each_batch_once_then_complete(hammer([first, second]))
        assert_each_batch_once_then_complete(hammer([second, first], group=9))
