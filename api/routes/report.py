"""GET /v1/jobs/{id}/report: the job's robustness report, one self-contained HTML file
(rendered by api.report; a running job's epochs come from its checkpoints)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from api.deps import OwnerDep, SessionDep
from api.report import render_report
from api.schemas import ID_PATTERN
from core.service import catalog
from core.service.errors import NotFound
from core.service.jobs import lifecycle

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, Path(max_length=40, pattern=ID_PATTERN)]
# Far above any job's epoch count (hyperparameters.epochs is at most 200).
MAX_EPOCHS_SHOWN = 1000
# The report has no scripts and loads nothing: a browser opening it needs nothing else.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@router.get(
    "/{job_id}/report",
    summary="The job's robustness report: one self-contained HTML file",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "the report"}},
)
def job_report(job_id: JobId, owner: OwnerDep, session: SessionDep) -> HTMLResponse:
    """Settings, before/after accuracy, per-epoch curves, accuracy against epsilon, the
    evaluation's sanity checks and the reproducibility manifest. Plots are inline SVG; a
    running job's report shows what is known so far."""
    job = lifecycle.get_job(session, owner.id, job_id)
    epochs: list[dict[str, Any]] | None = None
    if not (job.metrics or {}).get("epochs"):
        # The job records its epochs when it ends; until then each epoch is a checkpoint row.
        rows = catalog.list_checkpoints(session, job.id, after_epoch=0, limit=MAX_EPOCHS_SHOWN)
        epochs = [row.metrics for row in rows]
    model_name = None
    if job.model_id is not None:
        try:
            model_name = catalog.get_model(session, owner.id, job.model_id).name
        except NotFound:
            model_name = None
    html = render_report(job, epochs=epochs, model_name=model_name)
    return HTMLResponse(
        html,
        headers={
            "Content-Disposition": f'inline; filename="{job.id}-report.html"',
            "Content-Security-Policy": REPORT_CSP,
            "Cache-Control": "no-store",
        },
    )
