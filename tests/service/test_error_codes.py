"""One table of error codes: every domain error has exactly one code, the same in the API's
answer and on a failed job, and every code the engine can end a job with is in the table."""

from __future__ import annotations

import importlib
import pkgutil
from typing import get_args

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import core
from api.errors import install_error_handlers
from core.service.engine.failure import failure
from core.service.engine.protocol import FailureCode
from core.service.errors import (
    ERROR_CODES,
    ERROR_TABLE,
    JOB_CODES,
    JobCode,
    RobustError,
    ServiceError,
    error_code,
)


def _all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def _domain_errors() -> list[type[Exception]]:
    # Import every module of core, so a domain error defined anywhere in it is seen.
    for module in pkgutil.walk_packages(core.__path__, "core."):
        importlib.import_module(module.name)
    classes = {ServiceError, RobustError} | _all_subclasses(ServiceError)
    classes |= _all_subclasses(RobustError)
    return sorted(classes, key=lambda cls: cls.__name__)


DOMAIN_ERRORS = _domain_errors()


def test_every_domain_error_is_listed_with_its_own_code():
    unlisted = [cls.__name__ for cls in DOMAIN_ERRORS if cls not in ERROR_TABLE]
    assert unlisted == []
    codes = [code for _, code in ERROR_TABLE.values()]
    assert len(codes) == len(set(codes)), "two domain errors share a code"
    assert not set(codes) & set(JOB_CODES), "a job's own code is also a domain error's"


def test_every_job_code_is_described():
    named = {value for name, value in vars(JobCode).items() if name.isupper()}
    assert named == set(JOB_CODES)
    assert all(JOB_CODES.values())


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    def raise_domain_error(name: str) -> None:
        raise next(cls for cls in DOMAIN_ERRORS if cls.__name__ == name)("it went wrong")

    return TestClient(app)


@pytest.mark.parametrize("cls", DOMAIN_ERRORS, ids=lambda cls: cls.__name__)
def test_the_api_and_a_failed_job_give_a_domain_error_the_same_code(
    client: TestClient, cls: type[Exception]
):
    status, code = ERROR_TABLE[cls]
    response = client.get(f"/raise/{cls.__name__}")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    # The worker's pipeline writes error_code(exc) on the job; the engine process, failure(exc).
    assert error_code(cls("it went wrong")) == code
    if issubclass(cls, RobustError):
        for model_format in ("safetensors", "torchscript"):
            assert failure(cls("it went wrong"), model_format=model_format).code == code


def test_every_code_the_engine_can_end_a_job_with_is_in_the_table():
    assert set(get_args(FailureCode)) - ERROR_CODES == set()


def test_codes_that_are_not_domain_errors_keep_their_meaning():
    assert failure(MemoryError(), model_format="safetensors").code == JobCode.OUT_OF_MEMORY
    crashed = failure(RuntimeError("boom"), model_format="torchscript")
    assert crashed.code == JobCode.MODEL_ERROR
    unexpected = failure(KeyError("x"), model_format="safetensors")
    assert unexpected.code == JobCode.INTERNAL_ERROR
