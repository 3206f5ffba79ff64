"""`robustify demo`: the real command, end to end through the embedded service, on digits."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from core.robust.models.modelio import detect_format, load_model


def processes_using(folder: Path) -> list[int]:
    """Live processes whose environment names `folder` (the demo's service and its worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if str(folder).encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in ("Z", "X"):
                    found.append(int(entry.name))
        except OSError:  # ended while we looked, or not ours to read
            continue
    return found


def test_demo_hardens_a_digits_model_through_the_service(tmp_path: Path) -> None:
    robustify = shutil.which("robustify", path=str(Path(sys.executable).parent))
    assert robustify, "robustify is installed into the venv by `make install`"
    output, state = tmp_path / "out", tmp_path / "service-state"
    completed = subprocess.run(
        [robustify, "demo", "--output", str(output), "--data-dir", str(state), "--epochs", "10"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = (output / "service.log").read_text() if (output / "service.log").exists() else ""
    assert completed.returncode == 0, completed.stdout + completed.stderr + log[-3000:]

    printed = completed.stdout
    assert "the service is up at http://127.0.0.1:" in printed
    assert re.search(r"epoch 10  loss", printed)
    # Each cell is "12.0% (8.5–16.6)": the accuracy, then its 95% interval.
    row = re.search(r"PGD-20 \(eps 0\.2\)\s+│\s+([\d.]+)%[^│]*│\s+([\d.]+)%", printed)
    assert row, printed
    assert float(row.group(2)) > float(row.group(1)) + 20  # percentage points
    # The headline, the worst case of the standard ensemble, rose too (less: APGD-T finds
    # much of what PGD-20 misses on this weakly hardened CNN).
    headline = re.search(r"worst of PGD-20[^│]*│\s+([\d.]+)%[^│]*│\s+([\d.]+)%", printed)
    assert headline, printed
    assert float(headline.group(2)) > float(headline.group(1)) + 5
    assert "Stopping the service" in printed
    uploaded, hardened = output / "digits-cnn.pt", output / "digits-cnn-robust.pt"
    assert detect_format(uploaded) == detect_format(hardened) == "state_dict"
    model = load_model(
        hardened, input_shape=(1, 8, 8), num_classes=10, architecture="builtin:digits_cnn"
    )
    assert model.spec.format == "state_dict"
    assert (output / "report.html").is_file()
    assert f"Report: {output / 'report.html'}" in printed
    # The service (API and worker) is stopped: the job's database is in the data dir asked for.
    assert (state / "robustify.db").is_file()
    assert processes_using(state) == []
