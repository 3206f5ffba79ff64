"""The bridge to the engine: the sandboxed process that runs core.robust on a job (process),
the JSON-lines protocol it speaks (protocol), the error it ends with on an exception (failure)
and the worker's side of it (channel)."""
