"""The SDK's types of a job's metrics (stored as JSON objects the OpenAPI document does not
describe) against the engine's dataclasses the service stores them from."""

from __future__ import annotations

import dataclasses

from core.robust import EpochMetrics
from core.robust.ensemble import StageResult
from robustify import EpochRecord, Stage


def field_names(cls: type) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)}


def test_an_epoch_record_reads_only_what_the_engine_stores_of_an_epoch() -> None:
    assert field_names(EpochRecord) - field_names(EpochMetrics) == set()


def test_a_stage_has_the_fields_of_the_engines_stage_result() -> None:
    assert field_names(Stage) == field_names(StageResult)
