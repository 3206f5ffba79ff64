"""The service's shared parts, built once at an edge (API app, worker, CLI) from Settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.service.config import Settings
from core.service.db import make_engine, make_session_factory
from core.service.storage import ArtifactStore, store_from_settings


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ArtifactStore

    @classmethod
    def build(cls, settings: Settings) -> ServiceContext:
        engine = make_engine(settings)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_session_factory(engine),
            store=store_from_settings(settings),
        )
