"""The SDK's types against the API's OpenAPI document, built in-process from the app: each SDK
dataclass that mirrors a schema has exactly its properties, of the same JSON types, and what
the API always sends is not Optional in the SDK. A field the API adds and the SDK lacks (or
the reverse) fails here."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from datetime import datetime
from typing import Any

import pytest

from api.app import create_app
from core.service.config import Settings
from robustify import (
    Checkpoint,
    Dataset,
    EvaluationOptions,
    Event,
    Hyperparameters,
    Job,
    JobMetrics,
    Model,
    ThreatModelOptions,
)
from robustify.decoding import RAW, ApiObject
from robustify.resources import Jobs

# The SDK's answer types and the schema each one mirrors.
ANSWERS: list[tuple[type[Any], str]] = [
    (Model, "ModelOut"),
    (Dataset, "DatasetOut"),
    (Job, "JobOut"),
    (JobMetrics, "JobMetrics"),
    (Event, "EventOut"),
    (Checkpoint, "CheckpointOut"),
]
# The job's options as the SDK takes them, and the request schema each one fills.
REQUESTS: list[tuple[type[Any], str]] = [
    (ThreatModelOptions, "ThreatModelIn"),
    (Hyperparameters, "HyperparametersIn"),
    (EvaluationOptions, "EvaluationIn"),
]
# Required by JobOut, Optional in the SDK on purpose: jobs built by hand (tests, scripts) and
# jobs of older servers come without them.
TOLERATED_OPTIONAL = {"Job": {"created_at", "updated_at"}}


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("data")))
    components: dict[str, Any] = app.openapi()["components"]["schemas"]
    return components


def sdk_fields(cls: type[Any]) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)} - {RAW}


def without_none(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without None, whether it allowed None)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True  # noqa: UP007
    return annotation, False


def schema_types(prop: dict[str, Any]) -> tuple[set[str], bool]:
    """(the JSON types a property takes, whether it may be null)."""
    variants = prop.get("anyOf", [prop])
    kinds = {"object" if "$ref" in each else each.get("type", "any") for each in variants}
    return kinds - {"null"}, "null" in kinds


def json_type(annotation: Any) -> str:
    """The JSON type the SDK reads into `annotation`."""
    origin = typing.get_origin(annotation) or annotation
    if origin is list:
        return "array"
    if origin is dict or (isinstance(origin, type) and issubclass(origin, ApiObject)):
        return "object"
    if origin is typing.Any:
        return "any"
    return {str: "string", datetime: "string", int: "integer", float: "number", bool: "boolean"}[
        origin
    ]


def type_mismatches(cls: type[Any], schema: dict[str, Any]) -> dict[str, tuple[str, set[str]]]:
    hints = typing.get_type_hints(cls)
    found = {}
    for name, prop in schema["properties"].items():
        if name not in hints:
            continue
        kinds, _ = schema_types(prop)
        sdk_type = json_type(without_none(hints[name])[0])
        # JSON numbers take integers; a property without a type ("any") takes anything.
        if kinds and "any" not in kinds and sdk_type not in kinds | {"any"}:
            if not (sdk_type == "number" and kinds == {"integer"}):
                found[name] = (sdk_type, kinds)
    return found


@pytest.mark.parametrize(("sdk_type", "schema_name"), ANSWERS + REQUESTS)
def test_sdk_type_has_exactly_the_schemas_properties(
    schemas: dict[str, Any], sdk_type: type[Any], schema_name: str
) -> None:
    properties = set(schemas[schema_name]["properties"])

    assert sdk_fields(sdk_type) - properties == set(), f"the SDK has more than {schema_name}"
    assert properties - sdk_fields(sdk_type) == set(), f"the SDK's {sdk_type.__name__} lacks"


@pytest.mark.parametrize(("sdk_type", "schema_name"), ANSWERS + REQUESTS)
def test_sdk_fields_read_the_json_types_of_the_schema(
    schemas: dict[str, Any], sdk_type: type[Any], schema_name: str
) -> None:
    assert type_mismatches(sdk_type, schemas[schema_name]) == {}


@pytest.mark.parametrize(("sdk_type", "schema_name"), ANSWERS)
def test_what_the_api_always_sends_is_not_optional_in_the_sdk(
    schemas: dict[str, Any], sdk_type: type[Any], schema_name: str
) -> None:
    schema = schemas[schema_name]
    always = {
        name
        for name in schema.get("required", [])
        if not schema_types(schema["properties"][name])[1]
    }
    hints = typing.get_type_hints(sdk_type)

    optional = {name for name in always if without_none(hints[name])[1]}

    assert optional == TOLERATED_OPTIONAL.get(sdk_type.__name__, set())


def test_jobs_create_takes_every_field_of_the_job_request(schemas: dict[str, Any]) -> None:
    parameters = set(inspect.signature(Jobs.create).parameters) - {"self", "idempotency_key"}

    assert parameters == set(schemas["JobCreate"]["properties"])


def test_an_answer_with_every_schema_field_decodes_and_keeps_its_json() -> None:
    answer = {
        "id": "ds_1",
        "name": "tiny",
        "builtin": False,
        "kind": "npz",
        "input_shape": [1, 8, 8],
        "num_classes": 4,
        "train_size": 40,
        "test_size": None,
        "file_name": "tiny.npz",
        "sha256": "0" * 64,
        "size_bytes": 123,
        "description": None,
        "created_at": "2026-01-01T00:00:00Z",
        "added_by_a_newer_server": 1,
    }

    dataset = Dataset.from_json(answer)

    assert (dataset.file_name, dataset.input_shape, dataset.test_size) == (
        "tiny.npz",
        [1, 8, 8],
        None,
    )
    assert dataset.created_at == datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    assert dataset.raw["added_by_a_newer_server"] == 1
