"""A job's engine, run in the sandbox as `python -I -m core.service.engine.process` in its job
folder.

It holds no secret and reaches no database or artifact store: it reads `request.json` and the
files the worker staged beside it, loads the model and data, evaluates, fine-tunes and writes
its results into the folder, and talks to the worker (core.service.jobs.pipeline) over stdin/stdout
in core.service.engine.protocol's JSON lines, asking before every batch whether to go on.

A job of several processes runs this module once per rank under torchrun
(core.service.engine.channel.engine_argv): rank 0 speaks the protocol and evaluates; the other
ranks only train (core.robust.distributed), never touch the pipe, and die with torchrun.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import signal
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, cast

from core.service.engine.failure import failure
from core.service.engine.protocol import (
    MAX_LINE_BYTES,
    MODEL_FILE,
    REQUEST_FILE,
    RESUME_FILE,
    BatchDone,
    DatasetFacts,
    Environment,
    EpochDone,
    EpochReport,
    Evaluated,
    Finished,
    GuardReport,
    InterpolationReport,
    PhaseStarted,
    ProbeBatch,
    ProbeReport,
    Reply,
    Stopped,
    ValidationFacts,
    encode,
)

log = logging.getLogger("core.service.engine.process")

BEFORE_REPORT = "before.json"
AFTER_REPORT = "after.json"
RESULT_MODEL = "result.model"
# What the worker records of the fine-tuning's result: FinetuneResult's fields of these names
# pass to the Finished message as they are (it checks them).
RESULT_FACTS = (
    "best_epoch",
    "reference_clean_accuracy",
    "best_meets_clean_constraint",
    "peak_lr",
    "optimizer",
    "precision",
    "stopped_early",
)
# The other ranks wait in a collective while rank 0 alone evaluates before the training: hours
# on a large test set. A rank that dies ends the others at once (its sockets close).
GROUP_TIMEOUT_SECONDS = 6 * 3600.0


class StopAsked(Exception):
    """The worker answered "stop" (the job was cancelled, or the worker lost its lease)."""


class WorkerGone(Exception):
    """The worker closed the protocol pipe: nobody is left to store what this process makes."""


class Channel:
    """The protocol pipe, moved off fds 0 and 1 first: whatever the user's model prints (to fd
    1, from Python or C++) goes to stderr and can never pass for a message."""

    def __init__(self) -> None:
        self.outgoing: BinaryIO = os.fdopen(os.dup(1), "wb", buffering=0)
        self.incoming: BinaryIO = os.fdopen(os.dup(0), "rb")
        os.dup2(2, 1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)

    def send(self, message: Any) -> None:
        try:
            self.outgoing.write(encode(message))
        except BrokenPipeError as exc:
            raise WorkerGone from exc

    def ask(self, message: Any) -> None:
        """Send a question; StopAsked unless the worker answers go."""
        self.send(message)
        line = self.incoming.readline(MAX_LINE_BYTES)
        if not line:
            raise WorkerGone
        if not Reply.model_validate_json(line).go:
            raise StopAsked


class SilentChannel:
    """A rank other than 0: the same moves off fds 0 and 1 (the model may print), and nothing
    said or asked. The engine calls back on rank 0 only; rank 0 answers for all of them."""

    def __init__(self) -> None:
        os.dup2(2, 1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)

    def send(self, message: Any) -> None:
        pass

    def ask(self, message: Any) -> None:
        pass


@dataclass(frozen=True)
class RankPlace:
    """This process's place among the job's ranks (torchrun's RANK, LOCAL_RANK, WORLD_SIZE)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_launcher(cls, environment: Mapping[str, str]) -> RankPlace:
        return cls(
            rank=int(environment.get("RANK", "0")),
            local_rank=int(environment.get("LOCAL_RANK", "0")),
            world_size=int(environment.get("WORLD_SIZE", "1")),
        )

    @property
    def leader(self) -> bool:
        return self.rank == 0


class EngineJob:
    """The job's phases in the engine: load, evaluate before, fine-tune, evaluate after."""

    def __init__(
        self,
        request: dict[str, Any],
        channel: Channel | SilentChannel,
        place: RankPlace | None = None,
    ) -> None:
        import torch

        from core.robust.measure import default_device

        self.request, self.channel = request, channel
        self.place = place or RankPlace()
        device = torch.device(request["device"]) if request["device"] else default_device()
        if self.place.world_size > 1 and device.type == "cuda":
            device = torch.device("cuda", self.place.local_rank)  # one GPU per rank
        self.device = device

    def run(self) -> None:
        from core.service.jobs.jobconfig import evaluation_settings, threat_model

        model = self._load_model()
        data = self._load_data()
        self.data_facts = DatasetFacts(train_size=len(data.train), test_size=len(data.test))
        if self.request["kind"] == "harden":
            data = self._with_validation(data)
        threat = threat_model(self.request["config"])
        evaluation = self._sized(evaluation_settings(self.request["config"]), data, threat)
        if not self.request["has_before"] and self.place.leader:
            self.channel.ask(PhaseStarted(phase="evaluating_before"))
            report = self._evaluate(model, data, threat, evaluation)
            Path(BEFORE_REPORT).write_text(json.dumps(report.to_dict()))
            self.channel.ask(Evaluated(report=BEFORE_REPORT))
        if self.request["kind"] == "evaluate":
            self.channel.send(Finished(environment=self._environment(), dataset=self.data_facts))
            return
        self._harden(model, data, threat, evaluation)

    def _harden(self, model: Any, data: Any, threat: Any, evaluation: Any) -> None:
        from core.robust import adversarial_finetune, load_checkpoint, save_model
        from core.service.jobs.jobconfig import finetune_config

        # Augmentation "auto" (null) becomes the data's default here, where its shape is known.
        config = finetune_config(
            self.request["config"],
            dataset=self.request["dataset"]["name"],
            input_shape=data.input_shape,
        )
        resume = load_checkpoint(RESUME_FILE) if self.request["resume"] else None
        probing = config.peak_lr is None and resume is None
        self.channel.ask(PhaseStarted(phase="probing_lr" if probing else "training"))
        result = adversarial_finetune(
            model,
            data.train,
            threat,
            config,
            val=data.val,
            resume=resume,
            device=self.device,
            on_epoch=lambda metrics, checkpoint: self._save_epoch(model, metrics, checkpoint),
            on_batch=self._batch_done,
            on_probe_batch=self._probe_batch,
            on_decision=self._decision,
        )
        if not self.place.leader:
            return  # rank 0 evaluates and hands over the result
        self.channel.ask(PhaseStarted(phase="evaluating_after"))
        after = self._evaluate(result.model, data, threat, evaluation)
        Path(AFTER_REPORT).write_text(json.dumps(after.to_dict()))
        save_model(cast(Any, result.model), RESULT_MODEL)
        facts = {name: getattr(result, name) for name in RESULT_FACTS}
        self.channel.send(
            Finished(
                environment=self._environment(),
                dataset=self.data_facts,
                model=RESULT_MODEL,
                after=AFTER_REPORT,
                augmentation=config.augmentation,
                **facts,
            )
        )

    def _probe_batch(
        self, candidate: int, candidates: int, step: int, steps: int, job_share: float
    ) -> None:
        batch = ProbeBatch(
            candidate=candidate, candidates=candidates, step=step, steps=steps, job_share=job_share
        )
        self.channel.ask(batch)

    def _decision(self, decision: Any) -> None:
        """The probe's choice (then training starts), a guard's step back, or the mix with the
        starting weights handed back after the last epoch, for the worker."""
        from core.robust.interpolation import Interpolation
        from core.robust.lr_probe import LrProbe

        values = asdict(decision)
        if isinstance(decision, LrProbe):
            self.channel.ask(ProbeReport(**{**values, "reason": values["reason"][:500]}))
            self.channel.ask(PhaseStarted(phase="training"))
            return
        if isinstance(decision, Interpolation):
            self.channel.ask(InterpolationReport(**{**values, "message": values["message"][:500]}))
            return
        for name in ("value", "threshold"):
            if not math.isfinite(values[name]):
                values[name] = None
        self.channel.ask(GuardReport(**{**values, "message": values["message"][:500]}))

    def _batch_done(self, epoch: int, step: int, steps: int, loss: float) -> None:
        # The worker answers from the job's cancel flag: a "stop" ends the run before the next
        # batch (the exception leaves adversarial_finetune; nothing after it is needed).
        self.channel.ask(BatchDone(epoch=epoch, step=step, steps=steps, loss=loss))

    def _save_epoch(self, model: Any, metrics: Any, checkpoint: dict[str, Any]) -> None:
        from core.robust import save_checkpoint, save_model

        name = f"epoch-{metrics.epoch:04d}"
        save_checkpoint(checkpoint, f"{name}.ckpt")
        # The epoch's weights as a model file in the upload's format. The uploaded model object
        # is free to serve as the vessel: training works on its own copy.
        net_state = {
            key.removeprefix("net."): value
            for key, value in checkpoint["model"].items()
            if key.startswith("net.")
        }
        model.net.load_state_dict(net_state)
        save_model(model, f"{name}.model")
        # Waits for the worker to have stored both files and recorded the epoch.
        self.channel.ask(
            EpochDone(
                metrics=EpochReport(**asdict(metrics)),
                checkpoint=f"{name}.ckpt",
                weights=f"{name}.model",
            )
        )

    def _load_model(self) -> Any:
        from core.robust import load_model

        spec = self.request["model"]
        return load_model(
            MODEL_FILE,
            input_shape=tuple(spec["input_shape"]),
            num_classes=spec["num_classes"],
            mean=spec["mean"],
            std=spec["std"],
            architecture=spec["architecture"],
            format=spec["format"],
        )

    def _load_data(self) -> Any:
        from core.robust import DatasetError, load_dataset
        from core.robust.datasets.imagefolder import load_image_folder

        source = self.request["dataset"]
        streaming = {
            "stream_threshold_bytes": source["stream_threshold_bytes"],
            "stream_workers": source["stream_workers"],
        }
        if source["folder"] is not None:
            # An ImageFolder archive the worker extracted once into its cache (read-only here).
            data = load_image_folder(Path(source["folder"]), name=source["name"], **streaming)
        else:
            data = load_dataset(
                source["file"] or source["name"],
                data_dir=source["data_dir"],
                allow_download=source["allow_download"],
                **streaming,
            )
        spec = self.request["model"]
        if list(data.input_shape) != list(spec["input_shape"]):
            raise DatasetError(
                f"the dataset's images are {list(data.input_shape)} but the model "
                f"expects {spec['input_shape']}"
            )
        if data.num_classes > spec["num_classes"]:
            raise DatasetError(
                f"the dataset has {data.num_classes} classes but the model only "
                f"{spec['num_classes']}"
            )
        return data

    def _with_validation(self, data: Any) -> Any:
        """The split the best epoch is chosen on: the upload's own, else a seeded holdout from
        train (trained on no more); the test split stays for the before/after evaluation."""
        from core.robust.datasets.splits import with_validation
        from core.service.jobs.jobconfig import validation_fraction

        uploaded = data.val is not None
        fraction, seed = validation_fraction(self.request["config"]), self.request["config"]["seed"]
        data = with_validation(data, fraction=fraction, seed=seed)
        validation = (
            ValidationFacts(source="uploaded", size=len(data.val))
            if uploaded
            else ValidationFacts(
                source="train_holdout", size=len(data.val), fraction=fraction, seed=seed
            )
        )
        self.data_facts = DatasetFacts(
            train_size=len(data.train), test_size=len(data.test), validation=validation
        )
        return data

    def _sized(self, evaluation: Any, data: Any, threat: Any) -> Any:
        """The settings with max_samples filled in where the job left it to us: a harden job
        evaluates as many test images as fit its budget (core.service.jobs.eval_budget), before and
        after alike (the same subset); an evaluate job the default number."""
        from core.service.jobs.eval_budget import (
            DEFAULT_MAX_SAMPLES,
            harden_evaluation_samples,
            training_passes,
        )
        from core.service.jobs.jobconfig import finetune_config

        if evaluation.max_samples is not None:
            return evaluation
        if self.request["kind"] != "harden":
            return replace(evaluation, max_samples=DEFAULT_MAX_SAMPLES)
        config = finetune_config(self.request["config"])
        val_images = 0 if data.val is None else min(len(data.val), config.val_max_samples)
        training = training_passes(
            train_images=len(data.train),
            epochs=config.epochs,
            train_attack_steps=1 if config.attack == "fgsm" else threat.steps,
            val_images=val_images,
            val_steps=config.val_attack_steps,
        )
        samples = harden_evaluation_samples(training=training, attack_steps=evaluation.attack_steps)
        return replace(evaluation, max_samples=samples)

    def _evaluate(self, model: Any, data: Any, threat: Any, evaluation: Any) -> Any:
        from core.robust import evaluate

        return evaluate(
            model,
            data.test,
            threat,
            attack_steps=evaluation.attack_steps,
            restarts=evaluation.restarts,
            epsilons=evaluation.epsilons,
            attack=evaluation.attack,
            max_samples=evaluation.max_samples,
            seed=self.request["config"]["seed"],
            device=self.device,
        )

    def _environment(self) -> Environment:
        import numpy
        import torch
        import torchvision

        device = self.device
        return Environment(
            python=platform.python_version(),
            torch=torch.__version__,
            torchvision=torchvision.__version__,
            numpy=numpy.__version__,
            device_type=cast(Any, device.type),
            device_name=(
                torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else platform.processor() or platform.machine()
            )[:200],
            torch_threads=torch.get_num_threads(),
            world_size=self.place.world_size,
        )


def _die_with_parent() -> None:
    """A rank dies with torchrun: a worker that kills the engine kills every rank, sandboxed in
    namespaces or not."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def main() -> int:
    place = RankPlace.from_launcher(os.environ)
    channel = Channel() if place.leader else SilentChannel()
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    request = json.loads(Path(REQUEST_FILE).read_text())
    import torch

    from core.service.sandbox.limits import limit_self

    # The worker's threads are the job's: shared among its ranks on the CPU.
    torch.set_num_threads(max(1, request["threads"] // place.world_size))
    # After the imports, before the user's file is opened: the cap is on what the file costs.
    limit_self(memory_bytes=request["memory_bytes"], cpu_seconds=None)
    try:
        job = EngineJob(request, channel, place)
        if place.world_size > 1:
            from core.robust.distributed import start_process_group

            _die_with_parent()
            start_process_group(job.device, timeout_seconds=GROUP_TIMEOUT_SECONDS)
        job.run()
    except StopAsked:
        channel.send(Stopped())
    except WorkerGone:
        log.warning("the worker closed the protocol pipe; stopping")
        return 1
    except Exception as exc:
        log.exception("the job's engine failed")
        channel.send(failure(exc, model_format=request["model"]["format"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
