"""No client can starve the API, against real uvicorn servers on SQLite with the default pool:
many live event streams and stalled uploads of one owner leave another owner's requests fast;
the per-owner stream cap answers 429 and frees on disconnect; a stalled upload is cut off."""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))

from api_server import ApiServer
from http_checks import job_body, store_model, upload_model
from worker_harness import worker_settings

from core.service import auth
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.migrate import upgrade_database

BOUNDARY = "availability-boundary"
STREAM_REQUEST = (
    "GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    "Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
)


# -- the servers and their owners -------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    server: ApiServer
    settings: Settings

    def new_key(self) -> str:
        """The API key of a new owner (each test has owners of its own)."""
        context = ServiceContext.build(self.settings)
        try:
            with transaction(context.sessions) as session:
                return auth.create_key(session, owner_name=f"owner-{uuid.uuid4().hex[:8]}").key
        finally:
            context.engine.dispose()

    def stored(self) -> set[Path]:
        """Every file and folder in the artifact store."""
        root = self.settings.resolved_artifacts_dir
        return set(root.rglob("*")) if root.exists() else set()

    @contextmanager
    def client_and_sockets(self) -> Iterator[tuple[httpx.Client, ExitStack]]:
        """An HTTP client, and a stack that closes the test's raw sockets at its end."""
        with (
            httpx.Client(base_url=self.server.base_url, timeout=60) as client,
            ExitStack() as sockets,
        ):
            yield client, sockets


def embedded(folder: Path, **overrides: Any) -> Settings:
    """The embedded configuration (SQLite, the default pool) in `folder`, migrated."""
    settings = Settings(data_dir=folder / "data", **overrides)
    assert settings.resolved_database_url.startswith("sqlite")
    upgrade_database(settings)
    return worker_settings(settings)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """Two servers started side by side (each spends seconds importing torch): "busy" lets
    an owner keep 64 streams and 60 s idle uploads, "strict" cuts a stalled body off after
    2 s and gives each owner one upload slot."""
    folder = tmp_path_factory.mktemp("availability")
    configurations = {
        "busy": embedded(
            folder / "busy", max_event_streams_per_owner=64, upload_idle_timeout_seconds=60.0
        ),
        "strict": embedded(
            folder / "strict", upload_idle_timeout_seconds=2.0, upload_slots_per_owner=1
        ),
    }
    started: dict[str, Service] = {}
    try:
        for name, settings in configurations.items():
            started[name] = Service(ApiServer(settings, folder / f"{name}.log"), settings)
        for service in started.values():
            service.server.wait_healthy()
        yield started
    finally:
        for service in started.values():
            service.server.stop()


@pytest.fixture()
def busy(services: dict[str, Service]) -> Service:
    return services["busy"]


@pytest.fixture()
def strict(services: dict[str, Service]) -> Service:
    return services["strict"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def queued_job(service: Service, client: httpx.Client, key: str, model_file: Path) -> str:
    """A job of `key`'s owner that stays queued (no worker runs here): its stream stays open.
    Its model is put in the server's store and database directly (http_checks.store_model):
    these tests' uploads are the ones they time or refuse."""
    context = ServiceContext.build(service.settings)
    try:
        model = store_model(context, bearer(key), model_file)
    finally:
        context.engine.dispose()
    job = client.post("/v1/jobs", headers=bearer(key), json=job_body(model["id"]))
    assert job.status_code == 202, job.text
    job_id: str = job.json()["id"]
    return job_id


# -- raw HTTP on sockets, so that a request can stay open, or stall, as a test needs ----------


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    def parse(cls, received: bytes) -> RawResponse:
        head, _, body = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines)
        }
        return cls(int(status_line.split()[1]), headers, body)

    def json(self) -> Any:
        return json.loads(self.body)


def connect(service: Service, sockets: ExitStack) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", service.server.port), timeout=10)
    sockets.callback(connection.close)
    return connection


def read_until(
    connection: socket.socket, done: Callable[[bytes], bool], *, timeout: float
) -> bytes:
    """Bytes from `connection` until `done(received)` or the server closes; fails past
    `timeout`."""
    received = b""
    deadline = time.monotonic() + timeout
    while not done(received):
        connection.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            pytest.fail(f"no complete answer within {timeout} s; got {received[:300]!r}")
        if not chunk:
            break
        received += chunk
    return received


def answer_read(received: bytes) -> bool:
    """Whether `received` holds a response's head and either its whole body (Content-Length)
    or, for an event stream, its first bytes (the `retry:` line)."""
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        return False
    if b"text/event-stream" in head.lower():
        return b"retry:" in body
    return len(body) >= int(RawResponse.parse(head + found).headers.get("content-length", 0))


def read_answer(connection: socket.socket, *, timeout: float = 15) -> RawResponse:
    return RawResponse.parse(read_until(connection, answer_read, timeout=timeout))


def open_stream(
    service: Service, sockets: ExitStack, key: str, job_id: str
) -> tuple[socket.socket, RawResponse]:
    """An SSE request and its answer's first bytes; the socket stays open."""
    connection = connect(service, sockets)
    connection.sendall(STREAM_REQUEST.format(job_id=job_id, key=key).encode())
    return connection, read_answer(connection)


def start_stalled_upload(
    service: Service, sockets: ExitStack, key: str, *, path: str = "/v1/models"
) -> socket.socket:
    """An upload that sends its headers, the file part's headers and a few bytes of file,
    then nothing more (its Content-Length promises a megabyte)."""
    connection = connect(service, sockets)
    filename = "data.npz" if path == "/v1/datasets" else "model.pt"
    body_start = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\nPK\x03\x04 the first bytes"
    )
    connection.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {1024 * 1024}\r\n\r\n{body_start}"
        ).encode("latin-1")
    )
    return connection


def answered(connection: socket.socket, wait: float) -> bool:
    """Whether the server has sent anything on `connection` within `wait` seconds."""
    connection.settimeout(wait)
    try:
        return bool(connection.recv(1, socket.MSG_PEEK))
    except TimeoutError:
        return False


# -- the tests --------------------------------------------------------------------------------


def test_fifty_streams_and_six_stalled_uploads_leave_another_owner_fast(
    busy: Service, model_files: dict[str, Path]
):
    noisy, quiet = busy.new_key(), busy.new_key()
    with busy.client_and_sockets() as (client, sockets):
        noisy_job = queued_job(busy, client, noisy, model_files["state_dict"])
        quiet_job = queued_job(busy, client, quiet, model_files["state_dict"])

        # 50 streams at once: every request is sent before any answer is read.
        streams = [connect(busy, sockets) for _ in range(50)]
        for connection in streams:
            connection.sendall(STREAM_REQUEST.format(job_id=noisy_job, key=noisy).encode())
        starts = [read_answer(connection) for connection in streams]
        assert [start.status for start in starts] == [200] * 50
        assert all(b"retry: 2000" in start.body for start in starts)  # the first chunk

        # 6 stalled uploads: 4 hold the owner's slots, 2 are refused at once.
        stalled = [start_stalled_upload(busy, sockets, noisy) for _ in range(6)]
        deadline = time.monotonic() + 15
        while sum(answered(each, 0.05) for each in stalled) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        refused = [each for each in stalled if answered(each, 0.05)]
        holding = [each for each in stalled if each not in refused]
        assert len(refused) == 2
        for connection in refused:
            error = read_answer(connection)
            assert error.status == 429 and error.json()["error"]["code"] == "too_many_uploads"
        assert not any(answered(each, 0.5) for each in holding)

        seconds = []
        for _ in range(10):
            started = time.perf_counter()
            shown = client.get(f"/v1/jobs/{quiet_job}", headers=bearer(quiet))
            seconds.append(time.perf_counter() - started)
            assert shown.status_code == 200, shown.text
            time.sleep(0.1)
        uploaded = upload_model(client, bearer(quiet), model_files["state_dict"])  # type: ignore[arg-type]
        assert uploaded.status_code == 201, uploaded.text
        assert max(seconds) < 1.0, seconds

        # Meanwhile the noisy owner's stalled uploads still hold all of its slots.
        assert not any(answered(each, 0.01) for each in holding)
        again = upload_model(client, bearer(noisy), model_files["state_dict"])  # type: ignore[arg-type]
        assert again.status_code == 429, again.text


def test_stream_cap_answers_429_and_a_disconnect_frees_its_slot(
    busy: Service, model_files: dict[str, Path]
):
    key = busy.new_key()
    with busy.client_and_sockets() as (client, sockets):
        job_id = queued_job(busy, client, key, model_files["state_dict"])
        opened = [open_stream(busy, sockets, key, job_id) for _ in range(64)]
        assert {start.status for _, start in opened} == {200}

        _, refused = open_stream(busy, sockets, key, job_id)
        assert refused.status == 429 and refused.headers["retry-after"].isdigit()
        error = refused.json()["error"]
        assert error["code"] == "too_many_streams" and "at most 64 per owner" in error["message"]
        # The paged JSON answer is no stream: it stays available past the cap.
        page = client.get(f"/v1/jobs/{job_id}/events", headers=bearer(key))
        assert page.status_code == 200 and page.json()["items"][0]["type"] == "queued"

        opened[0][0].close()  # the client goes away: its slot must come back
        deadline = time.monotonic() + 10
        while True:
            _, again = open_stream(busy, sockets, key, job_id)
            if again.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again.status == 200


@pytest.mark.parametrize("path", ["/v1/models", "/v1/datasets"])
def test_stalled_upload_is_cut_off_with_408_and_leaves_nothing(
    strict: Service, model_files: dict[str, Path], path: str
):
    key = strict.new_key()
    before = strict.stored()
    with strict.client_and_sockets() as (client, sockets):
        started = time.monotonic()
        stalled = start_stalled_upload(strict, sockets, key, path=path)
        deadline = time.monotonic() + 1.5
        while not any(each.name.endswith(".part") for each in strict.stored() - before):
            assert time.monotonic() < deadline, "the stalled upload's bytes never reached a file"
            time.sleep(0.05)
        # While it stalls it holds the owner's only slot.
        held = upload_model(client, bearer(key), model_files["state_dict"])  # type: ignore[arg-type]
        assert held.status_code == 429, held.text

        cut_off = read_answer(stalled, timeout=10)
        elapsed = time.monotonic() - started
        assert cut_off.status == 408
        error = cut_off.json()["error"]
        assert error["code"] == "upload_stalled" and "2 seconds" in error["message"]
        assert 1.9 <= elapsed < 8, elapsed
        assert read_until(stalled, lambda _received: False, timeout=5) == b"", "not closed"
        # Nothing half-written: no partial file, not even the upload's own (empty) folder.
        root = strict.settings.resolved_artifacts_dir
        assert strict.stored() - before <= {root / "models", root / "datasets"}

        uploaded = upload_model(client, bearer(key), model_files["state_dict"])  # type: ignore[arg-type]
        assert uploaded.status_code == 201, uploaded.text
