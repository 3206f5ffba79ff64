"""The web page in a real headless Chromium (Debian's package, driven by Playwright) against a
real uvicorn server and a real Celery worker process: given the key it lists the owner's jobs,
starts a hardening job from its form, shows that job's progress moving and its epochs arriving
while it runs, and its plots and downloads when it ends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ApiServer
from playwright.sync_api import expect
from web_harness import Owner
from worker_harness import REPO_ROOT, WorkerProcess

from core.service.config import Settings

SCREENSHOT = REPO_ROOT / "docs" / "web-page.png"
SCREENSHOT_CLIP = {"x": 0, "y": 0, "width": 1280, "height": 2000}
EPOCHS = 4

# Every change of the open job's view, recorded in the page as it happens: the test reads the
# whole history afterwards instead of hoping to sample the page at the right moments.
RECORD_CHANGES = """() => {
  window.seen = [];
  const job = document.getElementById("job");
  const snapshot = () => window.seen.push({
    status: document.getElementById("job-status").textContent,
    fraction: Number(document.getElementById("progress").dataset.fraction || "0"),
    text: document.getElementById("progress-text").textContent,
    epochs: document.querySelectorAll("#epoch-table tbody tr").length,
  });
  new MutationObserver(snapshot).observe(job, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}"""


@pytest.fixture()
def service(web_settings: Settings, tmp_path: Path) -> Iterator[ApiServer]:
    """The API server and one worker on the embedded parts; stopped at teardown."""
    api = ApiServer(web_settings, tmp_path / "api.log")
    worker = WorkerProcess(web_settings, tmp_path / "worker.log")
    try:
        api.wait_healthy()
        yield api
    finally:
        worker.kill()
        api.stop()


def create_evaluate_job(api: ApiServer, owner: Owner) -> str:
    response = httpx.post(
        f"{api.base_url}/v1/jobs",
        headers=owner.headers,
        json={
            "kind": "evaluate",
            "model_id": owner.model.id,
            "dataset": "builtin:digits",
            "evaluation": {"attack_steps": 5, "max_samples": 100},
        },
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_page_lists_jobs_and_shows_live_progress_then_plots(
    service: ApiServer, owner: Owner, page: Any, tmp_path: Path
):
    expect.set_options(timeout=20_000)  # two shared cores: the worker and the server are busy
    uncaught: list[str] = []
    page.on("pageerror", lambda error: uncaught.append(str(error)))
    evaluate_id = create_evaluate_job(service, owner)
    page.goto(f"{service.base_url}/")

    # A key the service does not know is refused, and nothing is shown.
    page.fill("#api-key", "rk_not-a-key")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#message")).to_contain_text("The API key was refused")
    expect(page.locator("#app")).to_be_hidden()

    # Given the owner's key, the page lists the owner's jobs.
    page.fill("#api-key", owner.key)
    page.click("#key-form button[type=submit]")
    expect(page.locator(f'#jobs tr[data-job-id="{evaluate_id}"]')).to_be_visible()
    expect(page.locator("#model option")).to_have_count(1)

    # Start a hardening job from the form; the page opens it.
    page.evaluate(RECORD_CHANGES)
    page.select_option("#model", owner.model.id)
    page.fill("#epsilon", "0.2")
    page.fill("#epochs", str(EPOCHS))
    page.fill("#batch-size", "32")
    page.click("#harden-form summary")
    page.fill("#max-samples", "200")
    page.fill("#attack-steps", "10")
    page.click("#start")
    expect(page.locator("#job")).to_be_visible()
    job_id = page.locator("#job-id").text_content()
    assert job_id and job_id.startswith("job_") and job_id != evaluate_id
    expect(page.locator(f'#jobs tr[data-job-id="{job_id}"]')).to_be_visible()

    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=150_000)

    # While it ran, the page's progress moved and the epochs arrived one by one.
    seen = page.evaluate("window.seen")
    running = [change for change in seen if change["status"] == "running"]
    fractions = [change["fraction"] for change in running if 0 < change["fraction"] < 1]
    assert len(set(fractions)) >= 2, running
    assert fractions == sorted(fractions)
    epoch_counts = sorted({change["epochs"] for change in running})
    assert len(epoch_counts) >= 2 and any(0 < n < EPOCHS for n in epoch_counts), epoch_counts
    assert any("epoch" in change["text"] and "step" in change["text"] for change in running)
    expect(page.locator("#epoch-table tbody tr")).to_have_count(EPOCHS)
    expect(page.locator("#progress-text")).to_contain_text("100%")
    job_row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
    expect(job_row.locator(".status")).to_have_text("succeeded")

    # When it ended: the report's plots render, after the final evaluation.
    report = page.frame_locator("#report")
    expect(report.locator("#before-after th").filter(has_text="after")).to_be_visible()
    expect(report.locator("#training svg")).to_be_visible()
    expect(report.locator("#by-epsilon svg")).to_be_visible()
    box = page.locator("#report").bounding_box()
    assert box is not None and box["height"] > 1000  # sized to the whole report

    # The hardened model downloads, fetched with the key.
    job = httpx.get(f"{service.base_url}/v1/jobs/{job_id}", headers=owner.headers).json()
    with page.expect_download() as download_info:
        page.click('[data-download="result-model"]')
    downloaded = tmp_path / "downloaded.model"
    download_info.value.save_as(downloaded)
    result = httpx.get(
        f"{service.base_url}/v1/models/{job['result_model_id']}", headers=owner.headers
    ).json()
    assert downloaded.stat().st_size == result["size_bytes"]
    expect(page.locator('#downloads [data-download^="checkpoint-"]')).to_have_count(EPOCHS)

    page.screenshot(path=tmp_path / "web-page.png", full_page=True)
    # The README's picture (the page down to the report's first plots) is refreshed on request
    # only, so that running the tests leaves the working tree clean.
    if os.environ.get("ROBUSTIFY_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=SCREENSHOT, full_page=True, clip=SCREENSHOT_CLIP)

    # The key stays in the browser: a new visit lists the jobs without asking again.
    page.reload()
    expect(page.locator(f'#jobs tr[data-job-id="{job_id}"]')).to_be_visible()
    assert not uncaught, uncaught
