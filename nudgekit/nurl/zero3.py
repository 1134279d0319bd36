"""`uneven_generation`: let ZeRO-3 ranks generate different numbers of forward passes.

Under ZeRO-3 the GRPO backend's `generation()` gathers the parameters and removes DeepSpeed's
per-module hooks, but DeepSpeed also registers a *start-of-forward* hook on the top module
(`DeepSpeedZeRoOffload.fwd_pre_hook`) whose `reset_step` runs a collective (it checks every rank
is at the same trace step). A rank that decodes more steps than another (NuRL: it regenerates
hinted rollouts, the other rank has nothing to hint) then waits in that collective forever.

This context removes that one hook for the duration and puts it back first in the hook order
on exit, so generation is purely local while parameters are gathered. Nothing happens for other
backends, or when the hook is already gone (a backend that removes it itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def _offload(backend: Any) -> Any:
    if getattr(backend, "zero_stage", None) != 3:
        return None
    engine = getattr(backend, "engine", None)
    optimizer = getattr(engine, "optimizer", None)
    offload = getattr(optimizer, "parameter_offload", optimizer)
    return offload if getattr(offload, "fwd_pre_hook", None) is not None else None


@contextlib.contextmanager
def uneven_generation(backend: Any) -> Iterator[None]:
    """Within this block, ZeRO-3 forward passes need not be matched across ranks."""
    offload = _offload(backend)
    handle = getattr(offload, "fwd_pre_hook", None)
    module = getattr(offload, "module", None)
    hook = module._forward_pre_hooks.get(handle.id) if handle is not None else None
    if hook is None:
        yield
        return
    handle.remove()
    try:
        yield
    finally:
        offload.fwd_pre_hook = module.register_forward_pre_hook(hook, prepend=True)
