"""The API starts without the engine's heavy libraries: torch is imported only by the processes
that run a model (the sandboxed upload check, the worker's engine), matplotlib only when a
report is drawn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HEAVY_MODULES = ("torch", "torchvision", "timm", "matplotlib")

BUILD_AND_START = """
import sys
from fastapi.testclient import TestClient
from api.app import create_app
from core.service.config import Settings

app = create_app(Settings(data_dir=sys.argv[1], run_sweeper=False, sandbox="none"))
app.openapi()
with TestClient(app):  # the lifespan: the sandbox probe, the warm upload checker started
    pass
print(",".join(name for name in sys.argv[2:] if name in sys.modules))
"""


def test_api_builds_and_starts_without_importing_torch_or_matplotlib(tmp_path: Path):
    env = {name: value for name, value in os.environ.items() if not name.startswith("ROBUSTIFY_")}
    result = subprocess.run(
        [sys.executable, "-c", BUILD_AND_START, str(tmp_path), *HEAVY_MODULES],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "", f"imported at start: {result.stdout.strip()}"
