"""`robustify demo`: the real command, end to end, on the digits data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from core.robust.modelio import detect_format, load_model


def test_demo_hardens_a_digits_model_and_hands_back_the_same_format(tmp_path):
    robustify = shutil.which("robustify", path=str(Path(sys.executable).parent))
    assert robustify, "robustify is installed into the venv by `make install`"
    completed = subprocess.run(
        [robustify, "demo", "--output", str(tmp_path), "--epochs", "10"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "PGD-20 (eps 0.2)" in completed.stdout
    uploaded, hardened = tmp_path / "digits-cnn.pt", tmp_path / "digits-cnn-robust.pt"
    assert detect_format(uploaded) == detect_format(hardened) == "state_dict"
    model = load_model(
        hardened, input_shape=(1, 8, 8), num_classes=10, architecture="builtin:digits_cnn"
    )
    assert model.spec.format == "state_dict"
