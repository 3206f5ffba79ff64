"""The job request: the threat model, the hyperparameters and the evaluation a job runs with.

Its defaults come from the engine's own dataclasses (FinetuneConfig, ThreatModel and the
worker's EvaluationSettings), so the API and the engine cannot drift apart; the bounds here are
the service's (tighter than the engine's where a shared service needs them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from api.schemas.common import ID_PATTERN, StrictRequest
from core.robust.augmentation_choice import AUGMENTATIONS
from core.robust.finetune_config import ATTACKS, LOSSES, PRECISIONS, FinetuneConfig
from core.robust.optimizer_rates import OPTIMIZERS
from core.robust.schedules import DECAYS, SCHEDULES
from core.robust.threat import NORMS, ThreatModel
from core.service.broker import MAX_WORLD_SIZE
from core.service.jobs.jobconfig import EVALUATION_ATTACKS, VALIDATION_FRACTION, EvaluationSettings


def _defaults(cls: type) -> dict[str, Any]:
    """A dataclass's field defaults by name (typed Any: a field's default is typed "value or
    MISSING", and every field of these has one)."""
    return {f.name: f.default for f in dataclasses.fields(cls)}


FINETUNE_DEFAULTS = _defaults(FinetuneConfig)
THREAT_DEFAULTS = _defaults(ThreatModel)
EVALUATION_DEFAULTS = _defaults(EvaluationSettings)
MAX_EPSILON = {"linf": 1.0, "l2": 100.0}


class ThreatModelIn(StrictRequest):
    norm: Literal[NORMS] = THREAT_DEFAULTS["norm"]  # type: ignore[valid-type]
    epsilon: float = Field(
        THREAT_DEFAULTS["epsilon"],
        gt=0,
        le=MAX_EPSILON["l2"],
        description="radius in [0,1] pixel space: 0 < epsilon <= 1 for linf, <= 100 for l2",
    )
    step_size: float | None = Field(
        None, gt=0, le=MAX_EPSILON["l2"], description="null: 2.5 * epsilon / steps"
    )
    steps: int = Field(THREAT_DEFAULTS["steps"], ge=1, le=1000)

    @field_validator("epsilon")
    @classmethod
    def _epsilon_fits_norm(cls, epsilon: float, info: ValidationInfo) -> float:
        norm = info.data.get("norm", "linf")
        if epsilon > MAX_EPSILON[norm]:
            raise ValueError(f"a {norm} epsilon must be at most {MAX_EPSILON[norm]:g}")
        return epsilon


class HyperparametersIn(StrictRequest):
    epochs: int = Field(FINETUNE_DEFAULTS["epochs"], ge=1, le=200)
    batch_size: int = Field(FINETUNE_DEFAULTS["batch_size"], ge=1, le=4096)
    schedule: Literal[SCHEDULES] = FINETUNE_DEFAULTS["schedule"]  # type: ignore[valid-type]
    peak_lr: float | None = Field(
        None,
        gt=0,
        le=10,
        description="null: chosen by a short probe before training (each rate of a grid "
        "scaled to the batch size tried for a few steps and scored on the validation split; "
        "about 10% of the training's cost, more on very short runs)",
    )
    optimizer: Literal[OPTIMIZERS] = Field(  # type: ignore[valid-type]
        FINETUNE_DEFAULTS["optimizer"],
        description="auto: AdamW for a LayerNorm network without BatchNorm (ConvNeXt, ViT), "
        "SGD with momentum for any other; each has its own probe grid",
    )
    warmup_fraction: float = Field(FINETUNE_DEFAULTS["warmup_fraction"], ge=0, lt=1)
    decay: Literal[DECAYS] = FINETUNE_DEFAULTS["decay"]  # type: ignore[valid-type]
    decay_gamma: float = Field(FINETUNE_DEFAULTS["decay_gamma"], gt=0, lt=1)
    momentum: float = Field(FINETUNE_DEFAULTS["momentum"], ge=0, lt=1)
    weight_decay: float = Field(FINETUNE_DEFAULTS["weight_decay"], ge=0, le=0.1)
    loss: Literal[LOSSES] = FINETUNE_DEFAULTS["loss"]  # type: ignore[valid-type]
    trades_beta: float = Field(FINETUNE_DEFAULTS["trades_beta"], ge=0, le=100)
    attack: Literal[ATTACKS] = FINETUNE_DEFAULTS["attack"]  # type: ignore[valid-type]
    epsilon_rampup_fraction: float = Field(FINETUNE_DEFAULTS["epsilon_rampup_fraction"], ge=0, le=1)
    max_clean_drop: float = Field(
        FINETUNE_DEFAULTS["max_clean_drop"],
        ge=0,
        le=1,
        description="the best epoch keeps validation clean accuracy at least the uploaded "
        "model's minus this; the verdict is clean_dropped when test clean accuracy fell more",
    )
    guards: bool = Field(
        FINETUNE_DEFAULTS["guards"],
        description="step back to the best weights at a lower rate when the training loss "
        "climbs far above its early level or validation clean accuracy collapses; stop early "
        "after two such steps back",
    )
    weight_interpolation: bool = Field(
        FINETUNE_DEFAULTS["weight_interpolation"],
        description="when no epoch kept validation clean accuracy within max_clean_drop: hand "
        "back the most robust mix of the best epoch's weights with the uploaded ones that keeps "
        "it, found by a bisection of 4 validations along the line between them; false: the "
        "best epoch's weights, clean accuracy lost",
    )
    augmentation: Literal[AUGMENTATIONS] | None = Field(  # type: ignore[valid-type]
        None,
        description="applied to each training batch, on the GPU where there is one: none; "
        "standard = a random crop of the image zero-padded by 4 pixels and a left-right flip "
        "(small natural images); imagenet = a random resized crop (35-100% of the area, "
        "aspect 3/4 to 4/3) back to the input size and a left-right flip. null (auto): by the "
        "data, never flipping digits: none for the builtin digit sets (digits, digits32, mnist, "
        "svhn) and images under 16 pixels a side, standard up to 64, imagenet above; the "
        "choice made is in the job's metrics and manifest",
    )
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        FINETUNE_DEFAULTS["precision"],
        description="the training step's arithmetic (its attack and its update): auto = on a "
        "GPU, fp32 for images of at most 128 pixels on a side (where mixed precision measured "
        "no gain) and above that bf16 where the GPU has it, else fp16 with a gradient scaler; "
        "fp32 on a CPU worker; "
        "fp32, bf16 or fp16 to choose (bf16 and fp16 run on a CPU too, slowly). The evaluations "
        "and the validation stay fp32 (low-precision gradients can pass for robustness); the "
        "precision trained with is in the job's metrics and manifest",
    )
    compile: bool = Field(
        FINETUNE_DEFAULTS["compile"],
        description="torch.compile the model for the training step: faster steps on a GPU "
        "after a compilation of a minute or more at the start of the run (and of each of the "
        "learning-rate probe's trials)",
    )
    validation_fraction: float = Field(
        VALIDATION_FRACTION,
        gt=0,
        le=0.5,
        description="share of the training images held out (seeded; 100 to 5,000 images, at "
        "most half) to choose the best epoch on, unless the dataset brings its own validation "
        "split; the test split is only used for the before/after evaluation",
    )


class EvaluationIn(StrictRequest):
    attack: Literal[EVALUATION_ATTACKS] = Field(  # type: ignore[valid-type]
        EVALUATION_DEFAULTS["attack"],
        description="the attacks whose per-example worst case is the headline robust accuracy: "
        "fast = PGD-k alone (cheapest, weakest); standard = PGD-k with restarts, APGD-CE and "
        "APGD-T (targeted DLR), as in AutoAttack's standard version; autoattack = PGD-k, then "
        "the full standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square). Each attack runs only "
        "on the examples every earlier one failed to fool",
    )
    attack_steps: int = Field(EVALUATION_DEFAULTS["attack_steps"], ge=1, le=1000)
    restarts: int = Field(EVALUATION_DEFAULTS["restarts"], ge=1, le=20)
    autoattack: bool = Field(
        EVALUATION_DEFAULTS["autoattack"],
        description='deprecated: true is attack "autoattack"; not stored',
        json_schema_extra={"deprecated": True},
    )
    epsilons: list[float] | None = Field(
        EVALUATION_DEFAULTS["epsilons"],
        max_length=20,
        description="radii for accuracy-vs-epsilon; null: multiples of the threat's epsilon",
    )
    max_samples: int | None = Field(
        EVALUATION_DEFAULTS["max_samples"],
        ge=1,
        le=100_000,
        description="test images evaluated (a fixed seeded subset). null: for a harden job, as "
        "many as keep its two evaluations within 0.3x of its training's forward passes, between "
        "200 and 1,000; for an evaluate job 1,000",
    )

    @field_validator("epsilons")
    @classmethod
    def _positive(cls, epsilons: list[float] | None) -> list[float] | None:
        for value in epsilons or []:
            if not 0 < value <= MAX_EPSILON["l2"]:
                raise ValueError(f"each epsilon must be > 0 and <= {MAX_EPSILON['l2']:g}")
        return epsilons

    @model_validator(mode="after")
    def _autoattack_alias(self) -> EvaluationIn:
        """`autoattack: true` (the old field) is attack "autoattack"; with another attack
        named beside it the request is ambiguous, and refused naming the old field."""
        if not self.autoattack or self.attack == "autoattack":
            return self
        if "attack" in self.model_fields_set:
            conflict = PydanticCustomError(
                "conflicting_alias",
                "the deprecated autoattack true means attack 'autoattack', which conflicts "
                "with attack '{attack}': send attack alone",
                {"attack": self.attack},
            )
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [InitErrorDetails(type=conflict, loc=("autoattack",), input=self.model_dump())],
            )
        self.attack = "autoattack"
        return self


class ResourcesIn(StrictRequest):
    world_size: int = Field(
        1,
        ge=1,
        le=MAX_WORLD_SIZE,
        description="processes (one device each: GPUs, or a CPU worker's processes) the "
        "fine-tuning runs across under torchrun; the job waits for a worker that has as many. "
        "hyperparameters.batch_size is the global batch and must be divisible by it",
    )


class JobCreate(StrictRequest):
    kind: Literal["harden", "evaluate"]
    model_id: str = Field(min_length=1, max_length=40, pattern=ID_PATTERN)
    dataset: str = Field(
        min_length=1, max_length=200, pattern=ID_PATTERN, description="builtin:<name> or ds_…"
    )
    threat_model: ThreatModelIn = Field(default_factory=ThreatModelIn)
    hyperparameters: HyperparametersIn = Field(default_factory=HyperparametersIn)
    evaluation: EvaluationIn = Field(default_factory=EvaluationIn)
    seed: int = Field(FINETUNE_DEFAULTS["seed"], ge=0, le=2**31 - 1)
    resources: ResourcesIn = Field(default_factory=ResourcesIn)

    @model_validator(mode="after")
    def _batch_divides_among_ranks(self) -> JobCreate:
        world_size, batch_size = self.resources.world_size, self.hyperparameters.batch_size
        if batch_size % world_size:
            error = PydanticCustomError(
                "batch_not_divisible",
                "batch_size {batch_size} is the global batch: it must be divisible by "
                "resources.world_size {world_size}",
                {"batch_size": batch_size, "world_size": world_size},
            )
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=error, loc=("hyperparameters", "batch_size"), input=batch_size
                    )
                ],
            )
        return self

    def normalized_config(self) -> dict[str, Any]:
        """The config as stored and read by core.service.jobs.jobconfig: every default filled in."""
        return {
            "threat_model": self.threat_model.model_dump(),
            "hyperparameters": self.hyperparameters.model_dump(),
            # The effective preset, without the deprecated alias it may have come from.
            "evaluation": self.evaluation.model_dump(exclude={"autoattack"}),
            "seed": self.seed,
            "resources": self.resources.model_dump(),
        }
