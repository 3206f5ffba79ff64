"""`client.jobs`: create (harden or evaluate), list, get, cancel; the events (paged, or as they
happen), `wait` for the end; the checkpoints and the report."""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx

from robustify.connection import PAGE_SIZE, Connection, unavailable
from robustify.errors import ApiUnavailable
from robustify.follow import follow_job
from robustify.transfer import ProgressCallback
from robustify.types.jobs import Checkpoint, Event, Job
from robustify.types.options import (
    EvaluationOptions,
    Hyperparameters,
    Resources,
    ThreatModelOptions,
)

SSE_RECONNECTS = 3


class Jobs:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def create(
        self,
        *,
        kind: Literal["harden", "evaluate"],
        model_id: str,
        dataset: str = "builtin:digits",
        threat_model: ThreatModelOptions | None = None,
        hyperparameters: Hyperparameters | None = None,
        evaluation: EvaluationOptions | None = None,
        seed: int | None = None,
        resources: Resources | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a `harden` job (adversarial fine-tuning) or an `evaluate` one (robustness
        measured, nothing trained). Options left None get the server's defaults. With
        `idempotency_key`, a retry of the same request returns the same job."""
        body: dict[str, Any] = {"kind": kind, "model_id": model_id, "dataset": dataset}
        if threat_model is not None:
            body["threat_model"] = threat_model.to_json()
        if hyperparameters is not None:
            body["hyperparameters"] = hyperparameters.to_json()
        if evaluation is not None:
            body["evaluation"] = evaluation.to_json()
        if seed is not None:
            body["seed"] = seed
        if resources is not None:
            body["resources"] = resources.to_json()
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job.from_json(self._connection.json("POST", "/v1/jobs", json=body, headers=headers))

    def list(self, *, status: str | None = None) -> Iterator[Job]:
        """This owner's jobs, newest first; `status` keeps those in one status."""
        params = {"status": status} if status is not None else {}
        return self._connection.paged("/v1/jobs", Job.from_json, params)

    def get(self, job_id: str) -> Job:
        return Job.from_json(self._connection.json("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Job:
        """A queued job ends at once; a running one at its next batch (cancel_requested)."""
        return Job.from_json(self._connection.json("POST", f"/v1/jobs/{job_id}/cancel"))

    # -- events -------------------------------------------------------------------------------

    def events(self, job_id: str, *, after: int = 0) -> Iterator[Event]:
        """The job's events so far after event id `after`, oldest first, page by page."""
        while True:
            page = self._connection.json(
                "GET", f"/v1/jobs/{job_id}/events", params={"after": after, "limit": PAGE_SIZE}
            )
            for item in page["items"]:
                event = Event.from_json(item)
                after = event.id
                yield event
            if not page.get("next_cursor"):
                return

    def stream_events(self, job_id: str, *, after: int = 0) -> Iterator[Event]:
        """The job's events as they happen (SSE), from after event id `after` until the job
        has ended. A dropped connection is picked up again where it left off."""
        failures = 0
        while True:
            try:
                for message in self._connection.server_sent_events(
                    f"/v1/jobs/{job_id}/events", {"after": after}
                ):
                    event = Event.from_json(json.loads(message.data))
                    after, failures = event.id, 0
                    yield event
                return  # the server closes the stream once the job has ended
            except (httpx.TransportError, ApiUnavailable) as exc:
                failures += 1
                if failures > SSE_RECONNECTS:
                    raise unavailable(self._connection.url, exc) from exc
                time.sleep(0.5 * failures)

    def wait(
        self,
        job_id: str,
        *,
        on_progress: Callable[[Job], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
        poll_interval: float = 1.0,
        timeout: float | None = None,
    ) -> Job:
        """Follow the job until it ends and return it: events as they happen (SSE; paged
        polling where the stream fails), the job itself every `poll_interval` seconds.
        `on_event` sees each event once, in order; `on_progress` each fresh copy of the job.
        Raises TimeoutError after `timeout` seconds (the job goes on)."""
        return follow_job(
            job_id,
            get_job=lambda: self.get(job_id),
            events_after=lambda after: self.events(job_id, after=after),
            open_stream=lambda: self._stream_of_its_own(job_id),
            on_progress=on_progress,
            on_event=on_event,
            poll_interval=poll_interval,
            timeout=timeout,
        )

    @contextmanager
    def _stream_of_its_own(self, job_id: str) -> Iterator[Iterator[Event]]:
        # The stream is read by another thread: on a connection of its own (httpx clients are
        # not shared between threads).
        connection = self._connection.clone()
        try:
            yield Jobs(connection).stream_events(job_id)
        finally:
            connection.close()

    # -- what a job leaves ------------------------------------------------------------------

    def checkpoints(self, job_id: str) -> builtins.list[Checkpoint]:
        """Every epoch's checkpoint of the job, with its validation metrics."""
        return builtins.list(
            self._connection.paged(f"/v1/jobs/{job_id}/checkpoints", Checkpoint.from_json)
        )

    def download_checkpoint(
        self,
        job_id: str,
        epoch: int,
        path: str | Path,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Path:
        """Save one epoch's weights, in the uploaded model's format, at `path`."""
        url = f"/v1/jobs/{job_id}/checkpoints/{epoch}/content"
        return self._connection.download(url, destination=Path(path), on_progress=on_progress)

    def report_url(self, job_id: str) -> str:
        return f"{self._connection.url}/v1/jobs/{job_id}/report"

    def report_html(self, job_id: str) -> str:
        """The job's robustness report: one self-contained HTML page."""
        response = self._connection.request(
            "GET", f"/v1/jobs/{job_id}/report", headers={"Accept": "text/html"}
        )
        return response.text

    def download_report(self, job_id: str, path: str | Path) -> Path:
        destination = Path(path)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(self.report_html(job_id), encoding="utf-8")
        return destination
