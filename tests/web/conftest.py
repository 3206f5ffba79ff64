"""Fixtures of the report and page tests (helpers in web_harness)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from torch import nn
from web_harness import Owner, make_owner
from worker_harness import worker_settings

from core.config import Settings


@pytest.fixture()
def web_settings(embedded_settings: Settings) -> Settings:
    """The embedded configuration, with what the worker tests' workers run with."""
    return worker_settings(embedded_settings)


@pytest.fixture()
def owner(web_settings: Settings, pretrained_cnn: nn.Module) -> Iterator[Owner]:
    made = make_owner(web_settings, pretrained_cnn, "alice")
    yield made
    made.context.engine.dispose()
