"""Prometheus metrics of the service: requests, latency, records, batches and the model version served.

Each app gets its own ``CollectorRegistry`` so that several apps in one
process (the tests) do not collide; ``/metrics`` exposes that registry.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from inference.model_holder import LoadedModel, ModelHolder, RegistryState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS_S = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 512, 2048, 10_000)
KNOWN_PATHS = frozenset({"/predict", "/health", "/ready", "/model", "/model/reload", "/metrics"})


class ServiceMetrics:
    """The service's metric families, registered in a private registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, holder: ModelHolder) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "inference_requests_total",
            "HTTP requests by path, method and status code",
            ["path", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "inference_request_duration_seconds",
            "Time from request to response, by path",
            ["path"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.records = Counter(
            "inference_predicted_records_total",
            "Records predicted (a batch request counts each record)",
            registry=self.registry,
        )
        self.batch_records = Histogram(
            "inference_request_records",
            "Records per /predict request",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_batch_records = Histogram(
            "inference_model_call_records",
            "Records per predict_proba call (concurrent requests are micro-batched into one call)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_version = Gauge(
            "inference_model_version",
            "Registry version of the model being served (0 before any)",
            ["model_name", "alias"],
            registry=self.registry,
        )
        self.model_loaded = Gauge("inference_model_loaded", "1 when a model is loaded, else 0", registry=self.registry)
        self.registry_reachable = Gauge(
            "inference_registry_reachable",
            "1 when the last registry check got an answer (whatever it said), else 0 (unreachable, or not checked yet)",
            registry=self.registry,
        )
        # One series per state, so that an alert can name the state (alias_not_set, load_failed, ...): reachable
        # alone is 1 for every answer, a missing alias or a version that does not load included.
        self.registry_state = Gauge(
            "inference_registry_state",
            "1 for the outcome of the last registry check (/health's registry_state), 0 for the other states",
            ["state"],
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "inference_model_swaps_total", "Models loaded and put in service", registry=self.registry
        )
        self._holder = holder
        self.model_version.labels(holder.model_name, holder.model_alias).set(0)
        holder.on_swap(self._on_swap)

    def _on_swap(self, model: LoadedModel) -> None:
        self.model_swaps.inc()
        try:
            self.model_version.labels(model.name, model.alias).set(int(model.version))
        except ValueError:
            self.model_version.labels(model.name, model.alias).set(-1)

    def render(self) -> bytes:
        """The exposition text; gauges derived from the holder are read at scrape time."""
        self.model_loaded.set(1 if self._holder.current is not None else 0)
        state = self._holder.status.state
        self.registry_reachable.set(0 if state in {RegistryState.UNREACHABLE, RegistryState.PENDING} else 1)
        for each in RegistryState:
            self.registry_state.labels(each.value).set(1 if each is state else 0)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every request (pure ASGI: cheaper than ``BaseHTTPMiddleware`` on a hot path)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        path = path if path in KNOWN_PATHS else "other"
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.requests.labels(path, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
