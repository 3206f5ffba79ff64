"""The fine-tuning options of `harden` (an option group), named as the job's hyperparameters
are; those left out get the service's defaults (the paper's)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import typer

from cli.job_options import TRAINING
from robustify import Hyperparameters


@dataclass(frozen=True)
class TrainingOptions:
    """How `harden` fine-tunes; each field is the hyperparameter of its name."""

    epochs: Annotated[
        int | None,
        typer.Option(min=1, help="Epochs of fine-tuning (default 10).", rich_help_panel=TRAINING),
    ] = None
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Default 128.", rich_help_panel=TRAINING)
    ] = None
    peak_lr: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Peak learning rate (default: chosen by a short probe before training, about "
            "10% of its cost).",
            rich_help_panel=TRAINING,
        ),
    ] = None
    schedule: Annotated[
        str | None,
        typer.Option(
            help="slow_start_fast_decay (default), constant, piecewise, cosine, one_cycle.",
            rich_help_panel=TRAINING,
        ),
    ] = None
    optimizer: Annotated[
        str | None,
        typer.Option(
            help="auto (default: AdamW for a LayerNorm network such as ConvNeXt or a ViT, else "
            "SGD), sgd or adamw.",
            rich_help_panel=TRAINING,
        ),
    ] = None
    warmup_fraction: Annotated[
        float | None,
        typer.Option(
            min=0, help="Slow start's share of the run (default 0.5).", rich_help_panel=TRAINING
        ),
    ] = None
    loss: Annotated[
        str | None, typer.Option(help="pgd (default) or trades.", rich_help_panel=TRAINING)
    ] = None
    trades_beta: Annotated[
        float | None,
        typer.Option(min=0, help="TRADES' beta (default 6).", rich_help_panel=TRAINING),
    ] = None
    attack: Annotated[
        str | None,
        typer.Option(
            help="Training attack: pgd (default) or fgsm (fast mode).", rich_help_panel=TRAINING
        ),
    ] = None
    epsilon_rampup_fraction: Annotated[
        float | None,
        typer.Option(
            "--epsilon-rampup",
            min=0,
            help="Share of the run over which epsilon grows from 0 (default 0.3).",
            rich_help_panel=TRAINING,
        ),
    ] = None
    max_clean_drop: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=1,
            help="The most clean accuracy may fall: the best epoch keeps validation clean "
            "accuracy within it, and the verdict is clean_dropped past it (default 0.03).",
            rich_help_panel=TRAINING,
        ),
    ] = None
    validation_fraction: Annotated[
        float | None,
        typer.Option(
            help="Share of the training images held out to choose the best epoch on, unless "
            "the dataset brings its own validation split (default 0.1).",
            rich_help_panel=TRAINING,
        ),
    ] = None
    guards: Annotated[
        bool | None,
        typer.Option(
            "--guards/--no-guards",
            help="Step back at a lower rate when the loss climbs or clean accuracy collapses, "
            "and stop early after two steps back (default on).",
            rich_help_panel=TRAINING,
        ),
    ] = None
    weight_interpolation: Annotated[
        bool | None,
        typer.Option(
            "--weight-interpolation/--no-weight-interpolation",
            help="When no epoch keeps clean accuracy within --max-clean-drop, hand back the "
            "most robust mix of the best epoch's weights with the uploaded ones that keeps it "
            "(4 validations along the line between them; default on).",
            rich_help_panel=TRAINING,
        ),
    ] = None

    augmentation: Annotated[
        Literal["auto", "none", "standard", "imagenet"],
        typer.Option(
            help="Applied to each training batch: standard = a crop of the image padded by 4 "
            "pixels and a left-right flip (small natural images), imagenet = a random resized "
            "crop and a flip; auto (default): chosen by the data (never flipping digits: none "
            "for them and images under 16 pixels, standard up to 64, imagenet above).",
            rich_help_panel=TRAINING,
        ),
    ] = "auto"

    precision: Annotated[
        Literal["auto", "fp32", "bf16", "fp16"],
        typer.Option(
            help="The training step's arithmetic: auto (default) = on a GPU, fp32 for images "
            "of at most 128 px a side and above that bf16 where the GPU has it, else fp16 with "
            "a gradient scaler; fp32 on a CPU worker. Evaluation stays fp32.",
            rich_help_panel=TRAINING,
        ),
    ] = "auto"
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the model for training: faster GPU steps after a compilation "
            "at the start (default off).",
            rich_help_panel=TRAINING,
        ),
    ] = None

    def hyperparameters(self) -> Hyperparameters:
        values = asdict(self)
        # auto is the server's choice: the request leaves the field out.
        if values["augmentation"] == "auto":
            values["augmentation"] = None
        return Hyperparameters(**values)
