"""TorchScript archives written byte for byte the same from the same code and weights, and the
deprecation warning silenced on every TorchScript load and save."""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from core.robust.errors import ModelLoadError

__all__ = ["quiet_torchscript", "torchscript_bytes"]


@contextmanager
def quiet_torchscript() -> Iterator[None]:
    # TorchScript is deprecated upstream but is the one self-contained fine-tunable format we
    # accept; the warning on every load/save would only be noise in worker logs.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning
        )
        yield


# A constant of a scripted class, as torch prints it in the archive's code.
_SCRIPTED_CONSTANT = re.compile(r"  \w+ : Final\[.*\] = .*")


def torchscript_bytes(net: nn.Module) -> bytes:
    """`net` as a TorchScript archive whose bytes depend on its code and weights alone.

    Two things besides those would show in the bytes: the TorchScript pickler shares (memoizes)
    a tensor only when something else holds it too (an optimizer, a Python parameter object),
    and the scripting compiler lists a class's constants (a Conv2d's stride, padding, ...) in
    the order of a Python set of names, which changes with the interpreter's hash seed. So the
    module is saved, its constants sorted where we scripted it, loaded back as a fresh copy
    that nothing else holds, and that copy is what is written."""
    scripted = net
    if not isinstance(net, torch.jit.ScriptModule):
        try:
            scripted = torch.jit.script(net)
        except Exception as exc:  # the scripting compiler rejects many Python constructs
            raise ModelLoadError(f"cannot convert the model to TorchScript: {exc}") from exc
    first = io.BytesIO()
    torch.jit.save(scripted, first)
    if scripted is not net:
        first = _with_sorted_constants(first)
    first.seek(0)
    fresh = torch.jit.load(first, map_location="cpu")
    written = io.BytesIO()
    torch.jit.save(fresh, written)
    return written.getvalue()


def _with_sorted_constants(archive: io.BytesIO) -> io.BytesIO:
    """A copy of a TorchScript archive with each class's run of constants in sorted order."""
    rewritten = io.BytesIO()
    with (
        zipfile.ZipFile(archive) as source,
        zipfile.ZipFile(rewritten, "w", zipfile.ZIP_STORED) as target,
    ):
        for entry in source.infolist():
            data = source.read(entry)
            if "/code/" in entry.filename and entry.filename.endswith(".py"):
                data = _sorted_constants(data.decode("utf-8")).encode("utf-8")
            target.writestr(entry.filename, data)
    return rewritten


def _sorted_constants(code: str) -> str:
    """`code` with every run of consecutive constant lines of a class sorted."""
    lines: list[str] = []
    run: list[str] = []
    for line in code.split("\n"):
        if _SCRIPTED_CONSTANT.fullmatch(line):
            run.append(line)
            continue
        lines.extend(sorted(run))
        run = []
        lines.append(line)
    lines.extend(sorted(run))
    return "\n".join(lines)
