"""RobustifyClient: the whole v1 API over httpx, typed results, errors as exceptions."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from cli.sdk.errors import ApiError, ApiUnavailable
from cli.sdk.follow import follow_job
from cli.sdk.sse import read_sse
from cli.sdk.transfer import ProgressCallback, ProgressReader, expected_sha256, write_stream
from cli.sdk.types import (
    Checkpoint,
    Dataset,
    EvaluationOptions,
    Event,
    Hyperparameters,
    Job,
    Model,
    ThreatModelOptions,
)

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
# The API answers an upload only once a child process has loaded the model (up to its limit).
UPLOAD_READ_TIMEOUT = 300.0
# An SSE stream is silent between events; the server sends a keep-alive every 15 s.
STREAM_READ_TIMEOUT = 60.0
PAGE_SIZE = 100  # the API's largest page
SSE_RECONNECTS = 3


class RobustifyClient:
    """A client of one robustify API, as one API key's owner.

    `url` and `api_key` default to ROBUSTIFY_URL (else http://127.0.0.1:8000) and
    ROBUSTIFY_API_KEY. Every call raises `ApiError` when the API refuses and `ApiUnavailable`
    when it cannot be reached. Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("ROBUSTIFY_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("ROBUSTIFY_API_KEY")
        self.timeout = timeout
        self._transport = transport
        headers = {"User-Agent": "robustify-sdk/1"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_env(cls, *, timeout: float = DEFAULT_TIMEOUT) -> RobustifyClient:
        """A client of ROBUSTIFY_URL with ROBUSTIFY_API_KEY."""
        return cls(timeout=timeout)

    def clone(self) -> RobustifyClient:
        """Another client of the same API and key, with connections of its own."""
        return RobustifyClient(
            self.url, self.api_key, timeout=self.timeout, transport=self._transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RobustifyClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- operations ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """GET /healthz: the API process answers."""
        return self._json("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """GET /readyz: the database and the broker are reachable (ApiError 503 if not)."""
        return self._json("GET", "/readyz")

    def job_report_url(self, job_id: str) -> str:
        return f"{self.url}/v1/jobs/{job_id}/report"

    # -- models -------------------------------------------------------------------------------

    def upload_model(
        self,
        path: str | Path,
        *,
        input_shape: list[int] | tuple[int, int, int],
        num_classes: int | None = None,
        name: str | None = None,
        architecture: str | None = None,
        format: str | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Model:
        """Stream a model file to the API, which checks it (one forward pass) before it says 201.

        `architecture` (builtin:<name> or torchvision:<name>) is needed for a state_dict or
        safetensors file; `mean`/`std` are the normalization the model expects, if any.
        """
        fields: dict[str, str] = {"input_shape": json.dumps(list(input_shape))}
        optional = {"name": name, "architecture": architecture, "format": format}
        fields.update({key: value for key, value in optional.items() if value is not None})
        if num_classes is not None:
            fields["num_classes"] = str(num_classes)
        if mean is not None:
            fields["mean"] = json.dumps(list(mean))
        if std is not None:
            fields["std"] = json.dumps(list(std))
        return Model.from_json(self._upload("/v1/models", Path(path), fields, on_progress))

    def list_models(self) -> Iterator[Model]:
        """Every model of this owner, newest first (pages are fetched as the loop goes)."""
        return self._paged("/v1/models", Model.from_json)

    def get_model(self, model_id: str) -> Model:
        return Model.from_json(self._json("GET", f"/v1/models/{model_id}"))

    def delete_model(self, model_id: str) -> None:
        self._request("DELETE", f"/v1/models/{model_id}")

    def download_model(
        self, model_id: str, path: str | Path, *, on_progress: ProgressCallback | None = None
    ) -> Path:
        """Save the model's file at `path` (checked against its sha256); returns `path`."""
        return self._download(f"/v1/models/{model_id}/content", Path(path), on_progress)

    # -- datasets -----------------------------------------------------------------------------

    def upload_dataset(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Dataset:
        """Upload an .npz (x, y, optional x_test, y_test) or an ImageFolder .zip/.tar.gz."""
        fields = {"name": name} if name is not None else {}
        return Dataset.from_json(self._upload("/v1/datasets", Path(path), fields, on_progress))

    def list_datasets(self) -> Iterator[Dataset]:
        """The builtin datasets and this owner's uploads."""
        return self._paged("/v1/datasets", Dataset.from_json)

    def get_dataset(self, dataset_id: str) -> Dataset:
        return Dataset.from_json(self._json("GET", f"/v1/datasets/{dataset_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    # -- jobs ---------------------------------------------------------------------------------

    def create_job(
        self,
        *,
        kind: str,
        model_id: str,
        dataset: str = "builtin:digits",
        threat_model: ThreatModelOptions | None = None,
        hyperparameters: Hyperparameters | None = None,
        evaluation: EvaluationOptions | None = None,
        seed: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a `harden` or `evaluate` job. Options left None get the server's defaults.
        With `idempotency_key`, a retry of the same request returns the same job."""
        body: dict[str, Any] = {"kind": kind, "model_id": model_id, "dataset": dataset}
        if threat_model is not None:
            body["threat_model"] = threat_model.to_json()
        if hyperparameters is not None:
            body["hyperparameters"] = hyperparameters.to_json()
        if evaluation is not None:
            body["evaluation"] = evaluation.to_json()
        if seed is not None:
            body["seed"] = seed
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job.from_json(self._json("POST", "/v1/jobs", json=body, headers=headers))

    def harden(
        self,
        model_id: str,
        *,
        dataset: str = "builtin:digits",
        threat_model: ThreatModelOptions | None = None,
        hyperparameters: Hyperparameters | None = None,
        evaluation: EvaluationOptions | None = None,
        seed: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue adversarial fine-tuning of `model_id` (`create_job(kind="harden", ...)`)."""
        return self.create_job(
            kind="harden",
            model_id=model_id,
            dataset=dataset,
            threat_model=threat_model,
            hyperparameters=hyperparameters,
            evaluation=evaluation,
            seed=seed,
            idempotency_key=idempotency_key,
        )

    def evaluate(
        self,
        model_id: str,
        *,
        dataset: str = "builtin:digits",
        threat_model: ThreatModelOptions | None = None,
        evaluation: EvaluationOptions | None = None,
        seed: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a measurement of `model_id`'s robustness, no training (kind "evaluate")."""
        return self.create_job(
            kind="evaluate",
            model_id=model_id,
            dataset=dataset,
            threat_model=threat_model,
            evaluation=evaluation,
            seed=seed,
            idempotency_key=idempotency_key,
        )

    def list_jobs(self, *, status: str | None = None) -> Iterator[Job]:
        """This owner's jobs, newest first; `status` keeps those in one status."""
        params = {"status": status} if status is not None else {}
        return self._paged("/v1/jobs", Job.from_json, params)

    def get_job(self, job_id: str) -> Job:
        return Job.from_json(self._json("GET", f"/v1/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> Job:
        """A queued job ends at once; a running one at its next batch (cancel_requested)."""
        return Job.from_json(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def events(self, job_id: str, *, after: int = 0) -> Iterator[Event]:
        """The job's events so far after event id `after`, oldest first, page by page."""
        while True:
            page = self._json(
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
                for event in self._sse_once(job_id, after):
                    after, failures = event.id, 0
                    yield event
                return  # the server closes the stream once the job has ended
            except (httpx.TransportError, ApiUnavailable) as exc:
                failures += 1
                if failures > SSE_RECONNECTS:
                    raise _unavailable(self.url, exc) from exc
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
            self,
            job_id,
            on_progress=on_progress,
            on_event=on_event,
            poll_interval=poll_interval,
            timeout=timeout,
        )

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        """Every epoch's checkpoint of the job, with its validation metrics."""
        return list(
            self._paged(
                f"/v1/jobs/{job_id}/checkpoints", Checkpoint.from_json, {"limit": PAGE_SIZE}
            )
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
        return self._download(url, Path(path), on_progress)

    def report_html(self, job_id: str) -> str:
        """The job's robustness report: one self-contained HTML page."""
        response = self._request(
            "GET", f"/v1/jobs/{job_id}/report", headers={"Accept": "text/html"}
        )
        return response.text

    def download_report(self, job_id: str, path: str | Path) -> Path:
        destination = Path(path)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(self.report_html(job_id), encoding="utf-8")
        return destination

    # -- HTTP ---------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unavailable(self.url, exc) from exc
        _raise_for_error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code, "invalid_response", f"the API's answer is not JSON: {exc}"
            ) from exc

    def _paged(
        self,
        path: str,
        parse: Callable[[dict[str, Any]], T],
        params: dict[str, Any] | None = None,
    ) -> Iterator[T]:
        query = {"limit": PAGE_SIZE, **(params or {})}
        while True:
            page = self._json("GET", path, params=query)
            for item in page["items"]:
                yield parse(item)
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    def _upload(
        self,
        path: str,
        file_path: Path,
        fields: dict[str, str],
        on_progress: ProgressCallback | None,
    ) -> Any:
        with file_path.open("rb") as handle:
            total = os.fstat(handle.fileno()).st_size
            reader = ProgressReader(handle, total, on_progress)
            files = {"file": (file_path.name, reader, "application/octet-stream")}
            timeout = httpx.Timeout(self.timeout, read=max(self.timeout, UPLOAD_READ_TIMEOUT))
            return self._json("POST", path, data=fields, files=files, timeout=timeout)

    def _download(self, path: str, destination: Path, on_progress: ProgressCallback | None) -> Path:
        try:
            with self._http.stream("GET", path) as response:
                _raise_for_error(response)
                length = response.headers.get("content-length")
                return write_stream(
                    response.iter_bytes(),
                    destination,
                    total=int(length) if length and length.isdigit() else None,
                    sha256=expected_sha256(response.headers.get("etag")),
                    on_progress=on_progress,
                )
        except httpx.TransportError as exc:
            raise _unavailable(self.url, exc) from exc

    def _sse_once(self, job_id: str, after: int) -> Iterator[Event]:
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_TIMEOUT))
        with self._http.stream(
            "GET",
            f"/v1/jobs/{job_id}/events",
            params={"after": after},
            headers={"Accept": "text/event-stream"},
            timeout=timeout,
        ) as response:
            _raise_for_error(response)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise ApiError(
                    response.status_code, "not_a_stream", "the API did not answer with SSE"
                )
            for message in read_sse(response.iter_lines()):
                yield Event.from_json(json.loads(message.data))


def _unavailable(url: str, exc: BaseException) -> ApiUnavailable:
    if isinstance(exc, ApiUnavailable):
        return exc
    if isinstance(exc, httpx.ConnectError):
        reason = "nothing answers there (is the service running? `robustify up` starts one)"
    elif isinstance(exc, httpx.TimeoutException):
        reason = f"no answer in time ({type(exc).__name__})"
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ApiUnavailable(url, reason)


def _raise_for_error(response: httpx.Response) -> None:
    """An error answer as ApiError: the API's {"error": {...}} body, or what there is."""
    if response.status_code < 400:
        return
    response.read()
    try:
        detail = response.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
        field = detail.get("field")
    except (ValueError, KeyError, TypeError):
        code = f"http_{response.status_code}"
        text = response.text.strip().replace("\n", " ")
        message = text[:200] or response.reason_phrase or "error"
        field = None
    raise ApiError(response.status_code, code, message, field)
