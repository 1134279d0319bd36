"""The engine that samples from the live policy: rollouts, validation and NuRL's stage-1 filter.

`GRPOTrainer` calls its engine factory as `engine(model=<live module>, tokenizer=...)` and hands
the result to `build`, which returns a `RolloutEngine`:

- `LiveEngine` wraps an engine that reads the trainer's module itself (`HFEngine`): there is
  nothing to push; generation runs inside `backend.generation()` (ZeRO-3 gathers the module);
- `VLLMRollouts` is a colocated `vllm.LLM` per process that holds its own copy of the weights.
  Around every update the trainer calls `before_update` (vLLM sleeps: its memory is freed on a
  GPU with `sleep_mode`; a no-op on CPU) and `after_update` (wake, push the trainer's weights,
  reset the prefix cache). Under torchrun each rank runs its own engine
  (`distributed_executor_backend="external_launcher"`, tensor parallel 1), so a group's G
  rollouts and its hinted regeneration stay on the rank that owns the group.

`policy_weights` streams `(name, tensor)` pairs of the module's `state_dict()` (tied weights
included): plain references without ZeRO-3; under ZeRO-3 each module's own parameters are
gathered (a collective every rank enters in the same order), copied and released before the
next, so no rank ever holds the full model twice.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from nudgekit.rl import dist


class RolloutEngine(Protocol):
    """What the trainer asks of the engine that samples from the live policy."""

    syncs_weights: bool  # holds its own copy of the weights (pushed after every update)

    def generate(self, requests: list[Any]) -> list[Any]: ...

    def generation(self, backend: Any) -> contextlib.AbstractContextManager: ...

    def before_update(self) -> None: ...

    def after_update(self, backend: Any) -> None: ...

    def close(self) -> None: ...


class LiveEngine:
    """An engine over the trainer's live module (hf): the weights are always current.

    Args:
        engine: anything with `generate(requests)` that reads the live module.
    """

    syncs_weights = False

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def generate(self, requests: list[Any]) -> list[Any]:
        return self.engine.generate(requests)

    def generation(self, backend: Any) -> contextlib.AbstractContextManager:
        """The context generation runs in (ZeRO-3: the module's parameters gathered)."""
        return backend.generation()

    def before_update(self) -> None:
        """Nothing to free: the engine is the trainer's module."""

    def after_update(self, backend: Any) -> None:
        """Nothing to push."""

    def close(self) -> None:
        self.engine = None


class VLLMRollouts:
    """A colocated vLLM engine per process that takes the trainer's weights after each update.

    Args:
        model: the live module (unused for sampling; its weights are pushed by `push`).
        tokenizer: the trainer's tokenizer (the engine loads the same one from `spec`).
        spec: the policy's `ModelSpec` (vLLM starts from its checkpoint).
        sleep_mode: free vLLM's GPU memory during the update (`enable_sleep_mode`; GPU only).
        sleep_level: 1 offloads the weights to host memory; 2 drops them, buffers that are not
            pushed (e.g. rotary caches) included (untested: no GPU run yet).
        world_size: processes of the run (None: from the torchrun env); above one each rank
            starts its own engine with vLLM's external launcher.
        **engine_kwargs: `VLLMEngine` arguments (dtype, gpu_memory_utilization, max_model_len,
            llm_kwargs, ...).
    """

    syncs_weights = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        spec: Any,
        sleep_mode: bool = False,
        sleep_level: int = 1,
        world_size: int | None = None,
        **engine_kwargs: Any,
    ) -> None:
        from nudgekit.engines.vllm import VLLMEngine

        del model, tokenizer  # vLLM loads both from the spec's checkpoint; weights come by push
        world = world_size if world_size is not None else dist.ranks(os.environ)[2]
        llm_kwargs = dict(engine_kwargs.pop("llm_kwargs", None) or {})
        llm_kwargs.update(launcher_kwargs(world))
        self.sleep_level = sleep_level
        self.engine = VLLMEngine(
            spec, sleep_mode=sleep_mode, llm_kwargs=llm_kwargs, **engine_kwargs
        )
        self.pushes = 0

    def generate(self, requests: list[Any]) -> list[Any]:
        return self.engine.generate(requests)

    def generation(self, backend: Any) -> contextlib.AbstractContextManager:
        """vLLM samples from its own copy: the trainer's parameters stay partitioned."""
        return contextlib.nullcontext()

    def before_update(self) -> None:
        """Sleep (GPU with `sleep_mode`): the update gets vLLM's memory back."""
        self.engine.sleep(self.sleep_level)

    def after_update(self, backend: Any) -> None:
        """Wake up and push the trainer's weights (collective under ZeRO-3); on a GPU the
        weights wake first and the KV cache after the push (a lower peak)."""
        self.engine.wake_up(["weights"])
        self.push(backend)
        self.engine.wake_up(["kv_cache"])

    def push(self, backend: Any) -> None:
        """Load the trainer's current weights into vLLM and reset its prefix cache."""
        self.engine.load_weights(policy_weights(backend.module, zero3_stage(backend)))
        self.pushes += 1

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = None


def generating(engine: Any, backend: Any) -> contextlib.AbstractContextManager:
    """The context `engine` generates in: its own (`RolloutEngine.generation`), else the
    backend's (a plain engine over the live module)."""
    own = getattr(engine, "generation", None)
    return own(backend) if callable(own) else backend.generation()


def build(factory: Callable[..., Any], module: torch.nn.Module, tokenizer: Any) -> RolloutEngine:
    """Call the trainer's engine factory; wrap a plain engine as a `LiveEngine`."""
    engine = factory(model=module, tokenizer=tokenizer)
    return engine if hasattr(engine, "after_update") else LiveEngine(engine)


def launcher_kwargs(world_size: int) -> dict[str, Any]:
    """vLLM arguments for a colocated engine in a world of `world_size` processes."""
    return {"distributed_executor_backend": "external_launcher"} if world_size > 1 else {}


def zero3_stage(backend: Any) -> bool:
    """True when the backend partitions parameters (DeepSpeed ZeRO-3)."""
    return getattr(backend, "zero_stage", 0) == 3


def policy_weights(module: torch.nn.Module, zero3: bool = False) -> Iterator[tuple[str, Any]]:
    """`(name, tensor)` for every entry of `module.state_dict()` (tied weights under each name).

    Args:
        module: the trainer's HF module.
        zero3: its parameters are ZeRO-3 partitions: gather each module's own parameters
            (collective), yield copies, release them before the next module.
    """
    for prefix, sub in module.named_modules(remove_duplicate=False):
        own = {k: p for k, p in sub._parameters.items() if p is not None}
        buffers = {
            k: b
            for k, b in sub._buffers.items()
            if b is not None and k not in sub._non_persistent_buffers_set
        }
        if not own and not buffers:
            continue
        name = (prefix + ".") if prefix else ""
        with _gathered(list(own.values()), zero3):
            for key, tensor in {**own, **buffers}.items():
                data = tensor.detach()
                yield name + key, (data.clone() if zero3 else data)


def _gathered(params: list[torch.nn.Parameter], zero3: bool) -> contextlib.AbstractContextManager:
    if not zero3 or not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params)


def vllm_rollouts(spec: Any, **kwargs: Any) -> Callable[..., VLLMRollouts]:
    """Config entry of `engine=vllm` rollouts: check that vLLM is installed (a one-line error
    before anything loads; vLLM itself is imported only when the engine starts) and return the
    factory the trainer calls with `(model=, tokenizer=)`.

    Raises:
        NudgekitError: vLLM is not installed.
    """
    from nudgekit.engines.vllm import require_vllm

    require_vllm()
    return functools.partial(VLLMRollouts, spec=spec, **kwargs)
