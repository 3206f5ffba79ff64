"""Helpers of the report and page tests: an owner with an API key and the pretrained digits
model in a configuration's store, and jobs run to their end in this process by
core.service.jobs.pipeline."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

# The worker and end-to-end tests' harnesses (processes, settings as environment) serve here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from worker_harness import harden_config, store_digits_model

from core.service import auth
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.jobs import lifecycle
from core.service.jobs.pipeline import run_job
from core.service.tables import Checkpoint, Job, Model


@dataclass
class Owner:
    """An owner of one configuration: its API key and its uploaded digits model."""

    settings: Settings
    context: ServiceContext
    owner_id: str
    key: str
    model: Model

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def create_job(self, *, kind: str = "harden", **config: Any) -> str:
        with transaction(self.context.sessions) as session:
            job, _ = lifecycle.create_job(
                session,
                owner_id=self.owner_id,
                kind=kind,
                model_id=self.model.id,
                dataset="builtin:digits",
                config=harden_config(**config),
            )
            return job.id

    def run(self, job_id: str) -> Job:
        """Run the job here, as a worker would, to its end."""
        run_job(
            job_id,
            settings=self.settings,
            factory=self.context.sessions,
            store=self.context.store,
            worker_id=f"in-process-{uuid.uuid4().hex[:6]}",
        )
        return self.job(job_id)

    def job(self, job_id: str) -> Job:
        with self.context.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        with self.context.sessions() as session:
            return list(
                session.query(Checkpoint)
                .filter(Checkpoint.job_id == job_id)
                .order_by(Checkpoint.epoch)
            )


def make_owner(settings: Settings, net: nn.Module, name: str) -> Owner:
    context = ServiceContext.build(settings)
    with transaction(context.sessions) as session:
        created = auth.create_key(session, owner_name=f"{name}-{uuid.uuid4().hex[:6]}")
        owner_id, key = created.record.owner_id, created.key
    return Owner(
        settings=settings,
        context=context,
        owner_id=owner_id,
        key=key,
        model=store_digits_model(context, owner_id, net),
    )
