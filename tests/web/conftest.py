"""Fixtures of the report and page tests (helpers in web_harness)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright
from torch import nn
from web_harness import Owner, make_owner
from worker_harness import worker_settings

from core.service.config import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture()
def web_settings(embedded_settings: Settings) -> Settings:
    """The embedded configuration, with what the worker tests' workers run with."""
    return worker_settings(embedded_settings)


@pytest.fixture()
def owner(web_settings: Settings, pretrained_cnn: nn.Module) -> Iterator[Owner]:
    made = make_owner(web_settings, pretrained_cnn, "alice")
    yield made
    made.context.engine.dispose()


@pytest.fixture(scope="module")
def module_owner(
    make_embedded_settings: Callable[[Path], Settings],
    tmp_path_factory: pytest.TempPathFactory,
    pretrained_cnn: nn.Module,
) -> Iterator[Owner]:
    """An owner like `owner`, in a configuration of its own shared by one module's tests: for
    tests that only read what it holds, or add jobs of their own and look only at those."""
    settings = worker_settings(make_embedded_settings(tmp_path_factory.mktemp("web")))
    made = make_owner(settings, pretrained_cnn, "alice")
    yield made
    made.context.engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per module (a launch takes seconds); each test gets a fresh
    context of its own (cookies, storage, downloads) from `page`."""
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (as .ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()
