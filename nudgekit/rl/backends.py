"""Training backends: plain torch (one process) and DeepSpeed ZeRO 1/2/3 (torchrun / deepspeed).

A backend owns the policy's optimisation: it wraps the module, runs backward and the optimizer
step at gradient-accumulation boundaries, gives generation a plain module with full weights,
saves/loads its part of a checkpoint and exports full weights. The trainer calls the same methods
whatever the backend, so the GRPO step has no `if deepspeed` branches.

Conventions the trainer relies on:

- `backward(loss)` expects a loss already normalised by *global* counts (tokens or sequences of
  all ranks), i.e. the sum of the per-rank losses is the true loss. DeepSpeed averages gradients
  over ranks, so the DeepSpeed backend multiplies the loss by the world size (and tells
  DeepSpeed not to divide by the accumulation steps); the result equals one process doing the
  whole batch.
- `step()` is called after every micro-batch; it steps optimizer and scheduler only at the
  accumulation boundary and then returns the gradient norm (None otherwise).
- Under ZeRO-3, `generation()` gathers all parameters and removes DeepSpeed's forward hooks for
  its duration (as TRL's `unwrap_model_for_generation` does), so ranks may run different numbers
  of forward passes while generating, and generation runs at plain-module speed (`zero`).

Rank info and the collectives both backends share are `collectives.Collectives`. Both classes
stay in this module: a checkpoint records the backend as `backend._target_:
nudgekit.rl.backends.<class>` in its run config, and a resume compares that path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from nudgekit.errors import NudgekitError
from nudgekit.rl.collectives import Collectives
from nudgekit.rl.dist import fill_single_process_env
from nudgekit.rl.precision import ds_precision, module_dtype
from nudgekit.rl.runconfig import plain_container, set_optimizer_values
from nudgekit.rl.zero import (
    add_zero3_hooks,
    merge_config,
    remove_zero3_hooks,
    skip_shm_comm_build,
)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


class TorchBackend(Collectives):
    """Single-process training with a plain torch optimizer (the default).

    Args:
        max_grad_norm: clip the global gradient norm to this (0 or None: no clipping).
    """

    name = "torch"

    def __init__(self, max_grad_norm: float | None = 1.0) -> None:
        self.max_grad_norm = max_grad_norm
        self.module: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self._accum, self._micro = 1, 0

    def setup(
        self,
        module: torch.nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None,
        grad_accum_steps: int,
        micro_batch_size: int,
    ) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise NudgekitError(
                "trainer backend 'torch' runs in one process; under torchrun choose "
                "trainer/deepspeed=zero1|zero2|zero3"
            )
        self.module = module.train()
        self.device = _module_device(module)
        self.optimizer = optimizer(module.parameters())
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None
        self._accum, self._micro = grad_accum_steps, 0

    @property
    def model(self) -> torch.nn.Module:
        """What the trainer calls for forward passes."""
        return self.module

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> float | None:
        self._micro += 1
        if self._micro % self._accum:
            return None
        params = [p for p in self.module.parameters() if p.grad is not None]
        max_norm = self.max_grad_norm if self.max_grad_norm else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_hparams(self, values: dict[str, Any]) -> None:
        """Override optimizer settings a resumed checkpoint restored (`set_optimizer_values`)."""
        set_optimizer_values(self.optimizer, self.scheduler, values)

    @contextlib.contextmanager
    def generation(self) -> Iterator[torch.nn.Module]:
        yield self.module

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights as CPU tensors (on every rank)."""
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}

    def save(self, directory: Path) -> None:
        state = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }
        torch.save(state, directory / "torch_state.pt")

    def load(self, directory: Path) -> None:
        state = torch.load(directory / "torch_state.pt", map_location="cpu", weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def export(self, directory: Path, tokenizer: Any) -> None:
        """Write a plain HF checkpoint (`save_pretrained`) of the current policy."""
        self.module.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)

    def close(self) -> None:
        pass


class DeepSpeedBackend(Collectives):
    """DeepSpeed ZeRO stage 1, 2 or 3 around the same torch optimizer and scheduler.

    Launch with `torchrun --nproc_per_node=N run.py ...` (or the `deepspeed` launcher); on CPU
    set `DS_ACCELERATOR=cpu` (the gloo process group is used when there is no GPU). Mixed
    precision follows the dtype the policy was loaded in (`model.dtype=bfloat16`: DeepSpeed's
    bf16 with fp32 master weights; see `precision.ds_precision`); `config` can still override it.

    Args:
        zero_stage: 1, 2 or 3.
        max_grad_norm: gradient clipping (DeepSpeed's `gradient_clipping`; 0/None: off).
        config: extra DeepSpeed config, merged over the generated one (e.g.
            `{zero_optimization: {stage3_param_persistence_threshold: 0}}`).
        cpu_shm_comm: on CPU, let DeepSpeed JIT-compile its shared-memory all-reduce op (needs
            a C++ toolchain; minutes on first use). Off: gloo does every collective.
    """

    name = "deepspeed"

    def __init__(
        self,
        zero_stage: int = 2,
        max_grad_norm: float | None = 1.0,
        config: dict | None = None,
        cpu_shm_comm: bool = False,
    ) -> None:
        if zero_stage not in (1, 2, 3):
            raise NudgekitError(
                f"trainer/deepspeed: zero_stage must be 1, 2 or 3, got {zero_stage}"
            )
        self.zero_stage, self.max_grad_norm = zero_stage, max_grad_norm
        self.extra_config = plain_container(config or {})
        self.cpu_shm_comm = cpu_shm_comm
        self.engine: Any = None

    def ds_config(
        self,
        grad_accum_steps: int,
        micro_batch_size: int,
        world_size: int,
        dtype: torch.dtype = torch.float32,
    ) -> dict:
        """The DeepSpeed config; mixed precision follows the model's `dtype` (`ds_precision`)."""
        cfg: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": micro_batch_size,
            "gradient_accumulation_steps": grad_accum_steps,
            "train_batch_size": micro_batch_size * grad_accum_steps * world_size,
            "zero_optimization": {"stage": self.zero_stage},
            "gradient_clipping": float(self.max_grad_norm or 0.0),
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2**31 - 1,
            **ds_precision(dtype),  # bf16 model: bf16 with fp32 master weights
        }
        return merge_config(cfg, self.extra_config)

    def setup(self, module, optimizer, scheduler, grad_accum_steps, micro_batch_size) -> None:
        try:
            import deepspeed
        except ImportError:
            raise NudgekitError(
                "trainer/deepspeed: the deepspeed package is not installed"
            ) from None
        if not self.distributed:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "gloo" and not self.cpu_shm_comm:
                skip_shm_comm_build()
            # a plain `python run.py` has no torchrun env: a world of one from the env, no MPI
            fill_single_process_env()
            deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
        config = self.ds_config(
            grad_accum_steps, micro_batch_size, self.world_size, module_dtype(module)
        )
        self.engine, _, _, _ = deepspeed.initialize(
            model=module.train(),
            optimizer=optimizer(module.parameters()),
            lr_scheduler=scheduler,
            config=config,
        )
        self.device = torch.device(self.engine.device)

    @property
    def model(self) -> Any:
        return self.engine

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed averages gradients over ranks; the loss is already globally normalised.
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)

    def step(self) -> float | None:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        if not boundary:
            return None
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else None

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def set_hparams(self, values: dict[str, Any]) -> None:
        """Override optimizer settings a resumed checkpoint restored (`set_optimizer_values`)."""
        set_optimizer_values(self.engine.optimizer, self.engine.lr_scheduler, values)

    @contextlib.contextmanager
    def generation(self) -> Iterator[torch.nn.Module]:
        if self.zero_stage != 3:
            yield self.engine.module
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.engine.module.parameters())):
            remove_zero3_hooks(self.engine)
            try:
                yield self.engine.module
            finally:
                add_zero3_hooks(self.engine)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        with self.generation() as module:
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def save(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(directory), tag="deepspeed", save_latest=False)

    def load(self, directory: Path) -> None:
        # DeepSpeed unpickles these files (torch.load(weights_only=False)): only ever called on
        # a checkpoint `CheckpointManager` has verified against its manifest
        path, _ = self.engine.load_checkpoint(
            str(directory),
            tag="deepspeed",
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise NudgekitError(f"resume: {directory} holds no DeepSpeed state")

    def export(self, directory: Path, tokenizer: Any) -> None:
        with self.generation() as module:  # collective under ZeRO-3: every rank enters
            if self.is_main:
                state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                module.save_pretrained(directory, state_dict=state, safe_serialization=True)
                tokenizer.save_pretrained(directory)

    def close(self) -> None:
        self.engine = None


def _module_device(module: torch.nn.Module) -> torch.device:
    """The device of the module's first parameter (cpu for a module without parameters)."""
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
