"""What `robustify up` prints about where the artifacts go: the bucket and its endpoint when
they are in S3, the folder otherwise (it printed the unused folder for an S3 deployment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.service import _print_banner
from core.service.config import Settings


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps a long path onto the next line


def banner(settings: Settings, capsys: pytest.CaptureFixture[str]) -> str:
    _print_banner(settings, host="127.0.0.1", port=8000, worker_pid=42)
    return capsys.readouterr().out


def artifacts_line(text: str) -> str:
    [line] = [line.strip() for line in text.splitlines() if line.strip().startswith("artifacts")]
    return line


def test_an_s3_deployment_shows_its_bucket_and_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    settings = Settings(
        data_dir=tmp_path,
        artifacts_url="s3://robustify/artifacts",
        s3_endpoint_url="http://seaweedfs:8333",
    )
    line = artifacts_line(banner(settings, capsys))
    assert line == "artifacts s3://robustify/artifacts at http://seaweedfs:8333"
    aws = settings.model_copy(update={"s3_endpoint_url": None})
    assert artifacts_line(banner(aws, capsys)) == "artifacts s3://robustify/artifacts at AWS S3"


def test_a_folder_deployment_shows_its_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    line = artifacts_line(banner(Settings(data_dir=tmp_path), capsys))
    assert line == f"artifacts {(tmp_path / 'artifacts').resolve()}"
    elsewhere = Settings(data_dir=tmp_path, artifacts_url=str(tmp_path / "elsewhere"))
    assert artifacts_line(banner(elsewhere, capsys)) == f"artifacts {tmp_path / 'elsewhere'}"
