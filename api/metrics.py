"""Prometheus metrics, in a registry of the app's own (tests build many apps in one process).

Job counts by status, queue depth and epoch durations are read from the database and the
broker when scraped, so every API replica reports the same numbers; request latency by route
is measured here, per process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.queue import JobQueue
from core.service.catalog import count_jobs_by_status
from core.service.context import ServiceContext
from core.service.jobs.lifecycle import STATUSES
from core.service.tables import Checkpoint

log = logging.getLogger("robustify.api")

EPOCH_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
# A broker that is down makes the transport retry for seconds; a scrape does not wait for it.
QUEUE_DEPTH_WAIT_SECONDS = 3.0


class ServiceMetrics:
    """The app's registry: request latency (middleware) and the service's own state."""

    def __init__(self, context: ServiceContext, queue: JobQueue) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "robustify_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.registry.register(_ServiceCollector(context, queue))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ServiceCollector(Collector):
    def __init__(self, context: ServiceContext, queue: JobQueue) -> None:
        self.context, self.queue = context, queue
        # Epoch durations are folded in incrementally: each scrape reads only new checkpoints.
        self.lock = threading.Lock()
        self.last_checkpoint_id = ""
        self.bucket_counts = [0] * (len(EPOCH_BUCKETS) + 1)
        self.epoch_sum = 0.0
        self.depth_pool: ThreadPoolExecutor | None = None
        self.depth_call: Future[int | None] | None = None

    def describe(self) -> list[Metric]:
        return []  # collected on demand only (no DB query at registration)

    def collect(self) -> Iterator[Metric]:
        try:
            yield self._jobs()
            yield self._epochs()
        except Exception:  # a scrape must not fail because the database blinked
            log.exception("metrics: could not read the database")
        depth = self._queue_depth()
        if depth is not None:
            gauge = GaugeMetricFamily("robustify_queue_depth", "Job messages waiting in the broker")
            gauge.add_metric([], depth)
            yield gauge

    def _queue_depth(self) -> int | None:
        """The broker's count, or None when it cannot tell within a few seconds (one call at a
        time: a slow one still running is waited on, not doubled)."""
        with self.lock:
            if self.depth_pool is None:
                self.depth_pool = ThreadPoolExecutor(1, thread_name_prefix="queue-depth")
            if self.depth_call is None or self.depth_call.done():
                self.depth_call = self.depth_pool.submit(self.queue.depth)
            call = self.depth_call
        try:
            return call.result(timeout=QUEUE_DEPTH_WAIT_SECONDS)
        except FutureTimeout:
            return None

    def _jobs(self) -> Metric:
        with self.context.sessions() as session:
            counts = count_jobs_by_status(session)
        gauge = GaugeMetricFamily("robustify_jobs", "Jobs by status", labels=["status"])
        for status in STATUSES:
            gauge.add_metric([status], counts.get(status, 0))
        return gauge

    def _epochs(self) -> Metric:
        with self.lock:
            with self.context.sessions() as session:
                rows = session.execute(
                    select(Checkpoint.id, Checkpoint.metrics)
                    .where(Checkpoint.id > self.last_checkpoint_id)
                    .order_by(Checkpoint.id)
                )
                for checkpoint_id, metrics in rows:
                    self._observe_epoch(metrics)
                    self.last_checkpoint_id = checkpoint_id
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*EPOCH_BUCKETS, float("inf")), self.bucket_counts, strict=True
            ):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
            return HistogramMetricFamily(
                "robustify_epoch_seconds",
                "Seconds per training epoch (training and validation), from job checkpoints",
                buckets=buckets,
                sum_value=self.epoch_sum,
            )

    def _observe_epoch(self, metrics: dict[str, Any] | None) -> None:
        seconds = (metrics or {}).get("seconds")
        if not isinstance(seconds, int | float):
            return
        index = next((i for i, bound in enumerate(EPOCH_BUCKETS) if seconds <= bound), -1)
        self.bucket_counts[index] += 1
        self.epoch_sum += float(seconds)


class RequestMetricsMiddleware:
    """Times each request and logs one line for it; labels by route template, never by raw
    path (ids in paths would make a series per resource)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request_seconds.labels(scope["method"], route, str(status)).observe(
                seconds
            )
            fields: dict[str, Any] = {
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
            }
            job_id = scope.get("path_params", {}).get("job_id")
            if job_id is not None:
                fields["job_id"] = job_id
            log.info(
                "%s %s %s %.1fms",
                scope["method"],
                scope["path"],
                status,
                seconds * 1000,
                extra=fields,
            )
