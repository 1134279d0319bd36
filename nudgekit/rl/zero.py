"""DeepSpeed internals `DeepSpeedBackend` works around (the backend itself is in `backends`).

- ZeRO-3 generation: `remove_zero3_hooks` / `add_zero3_hooks` take DeepSpeed's forward and
  backward hooks off the module while its parameters are gathered for generation, and put them
  back (as TRL's `unwrap_model_for_generation` does), so ranks may run different numbers of
  forward passes while generating, at plain-module speed.
- CPU runs: `skip_shm_comm_build` keeps DeepSpeed from JIT-compiling its optional shared-memory
  all-reduce op (gloo does every collective).
- `merge_config`: a user's DeepSpeed config merged over the generated one.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch


def skip_shm_comm_build() -> None:
    """Make DeepSpeed's CPU comm backend skip building its optional shared-memory op."""
    # (`import deepspeed.comm.torch as m` would bind the `torch` name deepspeed.comm re-exports)
    ds_comm = importlib.import_module("deepspeed.comm.torch")
    if hasattr(ds_comm, "build_shm_op"):
        ds_comm.build_shm_op = lambda: None


def _zero3_offload(engine: Any) -> Any:
    optimizer = getattr(engine, "optimizer", None)
    return getattr(optimizer, "parameter_offload", optimizer)


def remove_zero3_hooks(engine: Any) -> None:
    """Detach ZeRO-3's module hooks for generation under gathered parameters."""
    offload = _zero3_offload(engine)
    if offload is None or not hasattr(offload, "forward_hooks"):
        return
    for param in _zero3_params(offload.module):
        param.ds_active_sub_modules.clear()
    for hook in [*offload.forward_hooks, *offload.backward_hooks]:
        hook.remove()
    offload.forward_hooks, offload.backward_hooks = [], []
    # The start-of-forward hook's `reset_step` runs a collective: with it attached, a rank that
    # decodes more steps than another (different lengths, NuRL regenerating on one rank only)
    # waits forever. Generation under gathered parameters is purely local, so detach it too.
    handle = getattr(offload, "fwd_pre_hook", None)
    hook = offload.module._forward_pre_hooks.get(handle.id) if handle is not None else None
    if hook is not None:
        handle.remove()
        offload._nk_detached_fwd_pre_hook = hook


def add_zero3_hooks(engine: Any) -> None:
    """Put back what `remove_zero3_hooks` took off, for training's forward and backward."""
    offload = _zero3_offload(engine)
    if offload is None or not hasattr(offload, "forward_hooks"):
        return
    coordinator = getattr(offload, "param_coordinator", None)
    if coordinator is not None and not coordinator.is_invalid_trace():
        coordinator._invalidate_trace()  # generation's forward passes are not the training trace
    hook = getattr(offload, "_nk_detached_fwd_pre_hook", None)
    if hook is not None:  # back first in the hook order, where DeepSpeed put it
        offload.fwd_pre_hook = offload.module.register_forward_pre_hook(hook, prepend=True)
        offload._nk_detached_fwd_pre_hook = None
    offload._register_deepspeed_module(offload.module)


def _zero3_params(module: torch.nn.Module) -> list[Any]:
    external = getattr(module, "ds_external_parameters", lambda: [])()
    return [p for _, p in [*module.named_parameters(recurse=True), *external]]


def merge_config(base: dict, extra: dict) -> dict:
    """`extra` over `base`, nested dicts merged key by key (other values replaced)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out
