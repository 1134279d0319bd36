"""Precision and activation-memory settings of the policy: DeepSpeed's bf16 and checkpointing.

- DeepSpeed's mixed precision follows the dtype the policy was loaded in (`ds_precision`): a
  bf16 model trains with DeepSpeed's bf16 optimizer, which keeps fp32 master weights and fp32
  optimizer state, an fp16 model with fp16 and dynamic loss scaling, an fp32 model with neither.
  (Turning bf16 on for an fp32 model would make DeepSpeed cast it down; leaving it off for a bf16
  model would run AdamW on bf16 weights.) The plain torch backend has no master weights: it
  steps whatever dtype the model has, so bf16 there is pure bf16 training.
- Gradient checkpointing (`enable_gradient_checkpointing`) uses transformers' non-reentrant
  checkpointing of every decoder layer. Its decoder layers drop the KV cache whenever they checkpoint (training mode,
  gradients on), so `shared_prefix_logprobs` cannot run the gradient pass under it: the update
  then runs every row as prompt ++ completion (`token_logprobs`, the same values and gradients),
  while no-grad passes (old and reference log-probs) still share each prompt.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from nudgekit.errors import NudgekitError

log = logging.getLogger(__name__)


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of the module's first floating-point parameter (fp32 when it has none)."""
    for param in module.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def ds_precision(dtype: torch.dtype) -> dict[str, Any]:
    """DeepSpeed's `bf16` / `fp16` config sections for a model loaded in `dtype`.

    Args:
        dtype: the policy's parameter dtype.

    Returns:
        `{"bf16": {"enabled": ...}, "fp16": {"enabled": ...}}`; at most one is enabled.
    """
    return {
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
    }


def enable_gradient_checkpointing(module: torch.nn.Module) -> None:
    """Turn on transformers' non-reentrant gradient checkpointing for `module`.

    Raises:
        NudgekitError: the model does not support it (one line).
    """
    if not getattr(module, "supports_gradient_checkpointing", False):
        raise NudgekitError(
            f"pipeline.update.gradient_checkpointing: {type(module).__name__} does not support "
            "gradient checkpointing; set pipeline.update.gradient_checkpointing=false"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5.2x's name
        module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def checkpointing_active(model: torch.nn.Module) -> bool:
    """Whether a forward pass of `model` now would checkpoint (and so drop its KV cache).

    True for a model (or a DeepSpeed/DDP wrapper of one) with gradient checkpointing on, in
    training mode, with gradients enabled.
    """
    core = getattr(model, "module", model)
    if not (core.training and torch.is_grad_enabled()):
        return False
    return any(getattr(m, "gradient_checkpointing", False) is True for m in core.modules())


def prepare_policy(
    module: torch.nn.Module, gradient_checkpointing: bool, share_prompt: bool
) -> torch.nn.Module:
    """Apply the memory settings to a freshly loaded policy (logs what checkpointing changes).

    Args:
        module: the policy.
        gradient_checkpointing: turn on `enable_gradient_checkpointing`.
        share_prompt: the trainer shares prompts in the update (only for the log line).

    Returns:
        The same module.
    """
    if gradient_checkpointing:
        enable_gradient_checkpointing(module)
        if share_prompt:
            log.info(
                "grpo: gradient checkpointing on; the update's gradient pass runs every row as "
                "prompt ++ completion (checkpointed layers drop the shared prompt's KV cache), "
                "no-grad passes still share prompts"
            )
    return module
