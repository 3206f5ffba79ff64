"""Which operators a TorchScript model may call: pure tensor ops only, checked over the graph of
every method of every submodule, so a model that reads or writes files is refused before it runs.

A TorchScript archive is a program. Its graphs can call any operator PyTorch registers, and a
few of those reach outside the tensors: `aten::from_file` maps any file into a tensor (read or,
with shared=True, write), `aten::save` writes one, the RPC ops talk to other processes. The
allowed set is every operator of the `aten` and `prim` namespaces (tensor math, control flow,
lists, constants) except those, and except any whose schema takes a file name; every other
namespace (distributed, CUDA streams, profiler, custom ops) is refused. This is defence in
depth: the model also runs only in a sandbox.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import torch

from core.robust.errors import ModelLoadError

__all__ = ["check_script_ops", "script_op_kinds"]

ALLOWED_NAMESPACES = frozenset({"aten", "prim"})
# Inside the allowed namespaces: the ops that touch files or other processes.
REFUSED_OPS = frozenset(
    {
        "aten::from_file",
        "aten::save",
        "prim::rpc_async",
        "prim::rpc_remote",
        "prim::rpc_sync",
        "prim::fork",
        "aten::fork",
        "aten::_test_warn_in_autograd",
    }
)
_FILE_ARGUMENT = re.compile(r"(file|path)", re.IGNORECASE)


@functools.cache
def _ops_with_file_arguments() -> frozenset[str]:
    """Registered ops whose schema takes a file name or path: refused whatever their name."""
    return frozenset(
        schema.name
        for schema in torch._C._jit_get_all_schemas()
        if any(
            _FILE_ARGUMENT.search(argument.name) and str(argument.type) in ("str", "str?")
            for argument in schema.arguments
        )
    )


def _is_allowed(kind: str) -> bool:
    namespace = kind.split("::", 1)[0]
    if namespace not in ALLOWED_NAMESPACES or kind in REFUSED_OPS:
        return False
    return kind not in _ops_with_file_arguments()


def _nodes(block: torch._C.Block) -> Iterator[torch._C.Node]:
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def script_op_kinds(module: torch.jit.ScriptModule) -> dict[str, str]:
    """Every operator kind in the model's code, mapped to one method that calls it
    (`submodule.method`), over every method of every submodule, calls inlined."""
    kinds: dict[str, str] = {}
    for prefix, submodule in module.named_modules():
        for name in submodule._c._method_names():
            method = submodule._c._get_method(name)
            graph = method.graph.copy()
            # Inlining pulls in the graphs of the functions and methods it calls.
            torch._C._jit_pass_inline(graph)
            where = f"{prefix or type(module).__name__}.{method.name}"
            for node in _nodes(graph.block()):
                kinds.setdefault(node.kind(), where)
    return kinds


def check_script_ops(module: torch.jit.ScriptModule) -> None:
    """Raise ModelLoadError naming the first operator outside the allow-list, and where."""
    refused = {
        kind: where for kind, where in script_op_kinds(module).items() if not _is_allowed(kind)
    }
    if refused:
        kind = sorted(refused)[0]
        others = sorted(refused)[1:4]
        also = f" (also: {', '.join(others)})" if others else ""
        raise ModelLoadError(
            f"the TorchScript model calls {kind} in {refused[kind]}{also}: a model may use only "
            "tensor operations, not file, process or network operations"
        )
