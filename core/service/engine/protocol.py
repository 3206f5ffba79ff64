"""The messages between a job's trusted parent (core.service.jobs.pipeline) and its sandboxed
engine process (core.service.engine.process): one JSON object a line, each way.

The child *asks* (phase, evaluated, batch, epoch) and waits for a `Reply` that says whether to
go on; it *ends* with finished, stopped or failed. Files it produced are named by a bare file
name inside the job folder, never a path. Everything here is parsed strictly on the parent's
side: a child runs a user's program and may say anything.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from core.robust.augmentation_choice import Augmentation

# The request the parent stages in the job folder, and the files it stages beside it.
REQUEST_FILE = "request.json"
MODEL_FILE = "model.input"
RESUME_FILE = "resume.ckpt"
# The longest line either side accepts: a message is small; reports travel as files.
MAX_LINE_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 4000

# A file the child wrote in the job folder: a bare name, nothing that could leave the folder.
FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
FileName = Annotated[str, Field(pattern=FILE_NAME_PATTERN)]
ShortText = Annotated[str, Field(max_length=200)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0, le=1e9)]

# Why a job's engine stopped with an error: the job's error code says it, one of
# core.service.errors' codes (a test checks that each is in its table).
FailureCode = Literal[
    "engine_error",
    "training_diverged",
    "invalid_model",
    "invalid_dataset",
    "unsafe_archive",
    "invalid_config",
    "model_error",
    "out_of_memory",
    "internal_error",
]
Phase = Literal["evaluating_before", "probing_lr", "training", "evaluating_after"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class EpochReport(_Strict):
    """core.robust's EpochMetrics, as the child reports it."""

    epoch: Annotated[int, Field(ge=1, le=1000)]
    train_loss: float
    train_robust_accuracy: Fraction
    lr: float
    epsilon: Annotated[float, Field(ge=0.0)]
    val_clean_accuracy: Fraction | None
    val_robust_accuracy: Fraction | None
    seconds: Seconds
    gradient_passes: Annotated[int, Field(ge=0)]
    train_seconds: Seconds


class Environment(_Strict):
    """What only the engine process knows, for the job's manifest."""

    python: ShortText
    torch: ShortText
    torchvision: ShortText
    numpy: ShortText
    device_type: Literal["cpu", "cuda", "mps"]
    device_name: ShortText
    torch_threads: Annotated[int, Field(ge=1, le=4096)]
    # The processes the job ran across (torchrun's ranks), each with torch_threads threads.
    world_size: Annotated[int, Field(ge=1, le=1024)] = 1


class ValidationFacts(_Strict):
    """The split the best epoch was chosen on (harden jobs): held out of train, or uploaded."""

    source: Literal["train_holdout", "uploaded"]
    size: Annotated[int, Field(ge=1)]
    fraction: Annotated[float, Field(gt=0.0, le=0.5)] | None = None  # a holdout's, for the manifest
    seed: Annotated[int, Field(ge=0)] | None = None


class DatasetFacts(_Strict):
    train_size: Annotated[int, Field(ge=0)]  # the images trained on (a holdout taken out)
    test_size: Annotated[int, Field(ge=0)]
    validation: ValidationFacts | None = None


class PhaseStarted(_Strict):
    type: Literal["phase"] = "phase"
    phase: Phase


class Evaluated(_Strict):
    """The evaluation of the uploaded model, its report in a JSON file."""

    type: Literal["evaluated"] = "evaluated"
    report: FileName


class BatchDone(_Strict):
    type: Literal["batch"] = "batch"
    epoch: Annotated[int, Field(ge=1, le=1000)]
    step: Annotated[int, Field(ge=1)]
    steps: Annotated[int, Field(ge=1)]
    loss: float


class ProbeBatch(_Strict):
    """A batch of the learning-rate probe: candidate rate `candidate` of `candidates`."""

    type: Literal["probe_batch"] = "probe_batch"
    candidate: Annotated[int, Field(ge=1, le=20)]
    candidates: Annotated[int, Field(ge=1, le=20)]
    step: Annotated[int, Field(ge=1)]
    steps: Annotated[int, Field(ge=1)]
    # The probe's planned share of the job's training work (its passes over probe + training):
    # the job's progress gives it that much of the bar, and training the rest.
    job_share: Annotated[float, Field(ge=0.0, lt=1.0)]


class ProbeTrialReport(_Strict):
    lr: Annotated[float, Field(gt=0.0, le=1e3)]
    val_clean_accuracy: Fraction
    val_robust_accuracy: Fraction
    kept_clean: bool
    diverged: bool


class ProbeReport(_Strict):
    """core.robust.lr_probe's LrProbe: the rates tried, the one chosen and what it cost."""

    type: Literal["lr_probe"] = "lr_probe"
    chosen_lr: Annotated[float, Field(gt=0.0, le=1e3)]
    reason: Annotated[str, Field(max_length=500)]
    trials: Annotated[list[ProbeTrialReport], Field(max_length=20)]
    steps_per_trial: Annotated[int, Field(ge=0)]
    eval_samples: Annotated[int, Field(ge=0)]
    gradient_passes: Annotated[int, Field(ge=0)]
    budget_fraction: Annotated[float, Field(ge=0.0, le=1e6)]
    seconds: Seconds
    reference_clean_accuracy: Fraction | None


class GuardReport(_Strict):
    """core.robust.guards' GuardDecision: a step back, or the early stop."""

    type: Literal["guard"] = "guard"
    epoch: Annotated[int, Field(ge=0, le=1000)]
    step: Annotated[int, Field(ge=0)]
    reason: Literal["loss_spike", "loss_not_finite", "clean_collapse"]
    action: Literal["stepped_back", "stopped"]
    value: float | None  # None: the loss was NaN or infinite
    threshold: float | None
    lr_scale: Annotated[float, Field(gt=0.0, le=1.0)]
    restored_epoch: Annotated[int, Field(ge=0, le=1000)]
    message: Annotated[str, Field(max_length=500)]


class MixTrialReport(_Strict):
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    val_clean_accuracy: Fraction
    val_robust_accuracy: Fraction
    kept_clean: bool


class InterpolationReport(_Strict):
    """core.robust.interpolation's Interpolation: the mixes of the best epoch's weights with the
    starting ones tried when no epoch kept clean accuracy, and the one handed back."""

    type: Literal["interpolation"] = "interpolation"
    from_epoch: Annotated[int, Field(ge=1, le=1000)]
    # Of the way from the starting weights to the best epoch's; None: no mix kept clean
    # accuracy, the best epoch's weights stay.
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] | None
    val_clean_accuracy: Fraction  # of the model handed back
    val_robust_accuracy: Fraction
    trials: Annotated[list[MixTrialReport], Field(min_length=1, max_length=20)]
    message: Annotated[str, Field(max_length=500)]


class EpochDone(_Strict):
    """An epoch's resumable checkpoint and its weights as a model file, to be stored."""

    type: Literal["epoch"] = "epoch"
    metrics: EpochReport
    checkpoint: FileName
    weights: FileName


class Finished(_Strict):
    type: Literal["finished"] = "finished"
    environment: Environment
    dataset: DatasetFacts
    model: FileName | None = None  # the hardened model (harden jobs)
    after: FileName | None = None  # its evaluation report
    # 0: every epoch collapsed and the guards handed back the uploaded weights.
    best_epoch: Annotated[int, Field(ge=0, le=1000)] | None = None
    # The uploaded model's validation clean accuracy, and whether the best epoch kept within
    # max_clean_drop of it (False: no epoch did; the most robust one was handed back).
    reference_clean_accuracy: Fraction | None = None
    best_meets_clean_constraint: bool | None = None
    peak_lr: Annotated[float, Field(gt=0.0, le=1e3)] | None = None  # the rate trained at
    # The one trained with ("auto" resolved).
    optimizer: Annotated[str, Field(pattern="^(sgd|adamw)$")] | None = None
    # The one trained with ("auto" resolved by the data).
    augmentation: Augmentation | None = None
    # The training step's ("auto" resolved on the engine's device).
    precision: Annotated[str, Field(pattern="^(fp32|bf16|fp16)$")] | None = None
    stopped_early: bool = False  # the guards ended training before its last epoch


class Stopped(_Strict):
    type: Literal["stopped"] = "stopped"


class Failed(_Strict):
    type: Literal["failed"] = "failed"
    code: FailureCode
    message: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


Question = (
    PhaseStarted
    | Evaluated
    | BatchDone
    | ProbeBatch
    | ProbeReport
    | GuardReport
    | InterpolationReport
    | EpochDone
)
Ending = Finished | Stopped | Failed
ChildMessage = Annotated[
    Question | Ending,
    Field(discriminator="type"),
]
CHILD_MESSAGE: TypeAdapter[ChildMessage] = TypeAdapter(ChildMessage)


class Reply(_Strict):
    """The parent's answer to every question: go on, or stop (cancelled, or lease lost)."""

    go: bool


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode() + b"\n"
