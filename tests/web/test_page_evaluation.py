"""The web page's evaluation table in a real headless Chromium against a real uvicorn server:
an ended job's before/after accuracies, each with its 95% interval and the sample count, from
the intervals the job stored or (jobs stored before intervals) computed in the page; and the
form sends the evaluation preset chosen. The jobs' metrics are written to their rows here
(the engine's shape, built by hand): no job runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from api_server import ApiServer
from playwright.sync_api import expect
from report_shapes import new_report, old_report
from web_harness import Owner

from core.service.db import transaction
from core.service.tables import Job


@pytest.fixture()
def owner(module_owner: Owner) -> Owner:
    """One owner for this module's tests: each opens a job of its own, by id."""
    return module_owner


@pytest.fixture(scope="module")
def api(module_owner: Owner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The API server alone, one for this module: no worker, so the jobs stay as the tests
    write them."""
    server = ApiServer(module_owner.settings, tmp_path_factory.mktemp("api") / "api.log")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def ended_job(owner: Owner, *, kind: str, **metrics: Any) -> str:
    """A job that succeeded with `metrics`, as a worker would have left its row."""
    job_id = owner.create_job(kind=kind)
    with transaction(owner.context.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.metrics = "succeeded", metrics
        job.progress = {"phase": "done", "fraction": 1.0}
        job.finished_at = datetime.now(UTC)
    return job_id


def open_job(page: Any, api: ApiServer, owner: Owner, job_id: str) -> None:
    page.goto(f"{api.base_url}/")
    page.fill("#api-key", owner.key)
    page.click("#key-form button[type=submit]")
    page.click(f'#jobs tr[data-job-id="{job_id}"]')
    expect(page.locator("#job-id")).to_have_text(job_id)


def cell(page: Any, metric: str, column: int) -> Any:
    return page.locator(f'#accuracy-table tr[data-metric="{metric}"] td').nth(column)


def test_page_shows_each_accuracy_with_its_stored_interval(api: ApiServer, owner: Owner, page: Any):
    expect.set_options(timeout=20_000)  # two shared cores
    before = new_report(robust=0.30, interval=[0.272, 0.329])
    job_id = ended_job(owner, kind="harden", before=before, after=new_report())

    open_job(page, api, owner, job_id)

    expect(page.locator("#evaluation")).to_be_visible()
    expect(cell(page, "robust_accuracy", 0)).to_have_text("30.0% [27.2–32.9]")
    expect(cell(page, "robust_accuracy", 1)).to_have_text("52.0% [48.9–55.1]")
    expect(cell(page, "clean_accuracy", 1)).to_have_text("95.0% [93.6–96.2]")
    expect(cell(page, "pgd_accuracy", 1)).to_have_text("55.0% [51.9–58.1]")
    robust_row = page.locator('#accuracy-table tr[data-metric="robust_accuracy"] th')
    expect(robust_row).to_contain_text("worst of PGD-20, APGD-CE, APGD-T")
    expect(page.locator("#evaluation-note")).to_contain_text("1,000 test images")
    expect(page.locator("#evaluation-note")).to_contain_text("95% confidence interval")


def test_page_computes_the_interval_of_an_old_report(api: ApiServer, owner: Owner, page: Any):
    expect.set_options(timeout=20_000)
    job_id = ended_job(owner, kind="evaluate", before=old_report())

    open_job(page, api, owner, job_id)

    # 0.5 on 100 images: the Wilson interval is [40.4%, 59.6%]; 0.9: [82.6%, 94.5%].
    expect(cell(page, "robust_accuracy", 0)).to_have_text("50.0% [40.4–59.6]")
    expect(cell(page, "clean_accuracy", 0)).to_have_text("90.0% [82.6–94.5]")
    expect(page.locator('#accuracy-table tr[data-metric="pgd_accuracy"]')).to_have_count(0)
    expect(page.locator("#accuracy-table th.before")).to_have_text("model")
    expect(page.locator("#accuracy-table th.after")).to_be_hidden()
    expect(page.locator("#evaluation-note")).to_contain_text("100 test images")


def test_the_form_sends_the_evaluation_preset_chosen(api: ApiServer, owner: Owner, page: Any):
    expect.set_options(timeout=20_000)
    page.goto(f"{api.base_url}/")
    page.fill("#api-key", owner.key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#model option")).to_have_count(1)

    page.click("#harden-form summary")
    page.select_option("#eval-attack", "fast")
    page.click("#start")

    expect(page.locator("#job")).to_be_visible()
    job_id = page.locator("#job-id").text_content()
    job = httpx.get(f"{api.base_url}/v1/jobs/{job_id}", headers=owner.headers).json()
    assert job["evaluation"]["attack"] == "fast"
