"""The settings that define a training run, recorded in each checkpoint and checked on resume.

A trainer describes its run as a flat `{dotted key: JSON value}` dict named like the pipeline
config (`optimizer.lr`, `group_size`, `loss.epsilon_high`, `model.name_or_path`, ...). The
checkpoint stores it in `trainer_state.json`; on resume `check_resume` compares it with the
current one and refuses any changed key in one line that names the key, both values and the
override that allows it (`pipeline.resume_allow=[optimizer.lr]`). Allowed keys are returned so
the trainer can set again what loading the checkpoint restored: `optimizer_overrides` picks the
optimizer's values (lr, betas, weight decay) and `set_optimizer_values` writes them into the
param groups after the optimizer state was loaded (a new lr also becomes the scheduler's base).
Everything else the trainer reads from its own arguments, so an allowed change there just holds.

Components are described generically (`describe`): the target class or function plus the
constructor arguments the object keeps under the same attribute names, recursively; functions
and classes by import path. Nothing with a memory address ends up in a description, so the same
config always describes the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

from nudgekit.errors import NudgekitError

log = logging.getLogger(__name__)
_MAX_DEPTH = 4
MISSING = "<unset>"


def plain_container(node: Any) -> Any:
    """OmegaConf containers (from Hydra) to plain dicts/lists."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return node


def _path(obj: Any) -> str:
    """`module.qualname` of a function, class or other named callable."""
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return f"{module}.{name}" if name else f"{type(obj).__module__}.{type(obj).__qualname__}"


def _init_args(obj: Any) -> dict[str, Any]:
    """Constructor arguments that `obj` keeps as same-named attributes."""
    try:
        params = inspect.signature(type(obj)).parameters.values()
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {
        p.name: getattr(obj, p.name) for p in params if p.kind not in kinds and hasattr(obj, p.name)
    }


def describe(obj: Any, depth: int = 0) -> Any:
    """A JSON-able, address-free description of a config value or a built component.

    Args:
        obj: a primitive, container, `functools.partial` (a `_partial_` factory), function,
            class, dataclass or object.
        depth: recursion depth (objects deeper than a few levels are named, not expanded).

    Returns:
        Primitives as they are, containers element-wise, a partial or object as
        `{"_target_": path, **arguments}`, a function or class as its import path.
    """
    obj = plain_container(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [describe(v, depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {str(k): describe(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, functools.partial):
        args = {f"arg{i}": v for i, v in enumerate(obj.args)}
        return {
            "_target_": _path(obj.func),
            **{k: describe(v, depth + 1) for k, v in {**args, **obj.keywords}.items()},
        }
    if inspect.isroutine(obj) or inspect.isclass(obj):
        return _path(obj)
    if depth >= _MAX_DEPTH:
        return _path(type(obj))
    if dataclasses.is_dataclass(obj):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    else:
        fields = _init_args(obj)
    return {"_target_": _path(type(obj)), **{k: describe(v, depth + 1) for k, v in fields.items()}}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to `{dotted.key: leaf}`; lists are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def digest(items: Iterable[Any]) -> str:
    """`"<n> items, sha256 <12 hex>"` of JSON-able items (e.g. the training problems)."""
    h, n = hashlib.sha256(), 0
    for item in items:
        h.update(json.dumps(item, sort_keys=True, default=str).encode())
        h.update(b"\n")
        n += 1
    return f"{n} items, sha256 {h.hexdigest()[:12]}"


def normalise(config: dict[str, Any]) -> dict[str, Any]:
    """A config as it reads back from JSON (tuples become lists), so comparisons are exact."""
    return json.loads(json.dumps(config, sort_keys=True))


def changed_keys(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose value differs between a recorded and the current flat config.

    A key on one side only counts as changed when the other side has a key on its path
    (`lr_scheduler: null` recorded, `lr_scheduler._target_` now: a scheduler was added). One
    under a component both sides describe alike (a constructor argument newer code added) is
    not comparable and is left out.
    """
    out = []
    for key in set(recorded) | set(current):
        if key in recorded and key in current:
            if recorded[key] != current[key]:
                out.append(key)
        elif _related(key, current if key in recorded else recorded):
            out.append(key)
    return sorted(out)


def _related(key: str, other: dict[str, Any]) -> bool:
    """Whether `other` has a key that is a prefix of `key`, or that `key` is a prefix of."""
    parts = key.split(".")
    if any(".".join(parts[:i]) in other for i in range(1, len(parts))):
        return True
    return any(k.startswith(f"{key}.") for k in other)


def is_allowed(key: str, allow: Sequence[str]) -> bool:
    """Whether `allow` covers `key`: the key itself, a prefix (`optimizer`), or a last part (`lr`)."""
    return any(key == a or key.startswith(f"{a}.") or key.endswith(f".{a}") for a in allow)


def _show(value: Any) -> str:
    return MISSING if value == MISSING else json.dumps(value)


def check_resume(
    recorded: dict[str, Any] | None, current: dict[str, Any], allow: Sequence[str], where: Any
) -> dict[str, tuple[Any, Any]]:
    """Compare a checkpoint's recorded run config with this run's.

    Args:
        recorded: the checkpoint's flat config (None: an older checkpoint that records none;
            logged, nothing checked).
        current: this run's flat config.
        allow: keys (or prefixes / last parts) that may differ.
        where: the checkpoint, for messages.

    Returns:
        `{key: (old, new)}` of the changed keys that `allow` covers (logged as a warning).

    Raises:
        NudgekitError: one line naming every changed key that is not allowed, old -> new, and
            the override that allows them.
    """
    if recorded is None:
        log.warning(
            "resume: %s records no run config (written by an older nudgekit); "
            "changed settings cannot be detected",
            where,
        )
        return {}
    current, recorded = normalise(current), upgrade_keys(recorded)
    changed = changed_keys(recorded, current)
    unrecorded = sorted(set(current) - set(recorded) - set(changed))
    if unrecorded:
        log.info("resume: %s does not record %s (newer settings); not checked", where, unrecorded)
    refused = [k for k in changed if not is_allowed(k, allow)]
    if refused:
        shown = _changes(refused, recorded, current)
        raise NudgekitError(
            f"resume: {where} was written with different settings: {shown}; to resume with the "
            f"new values set pipeline.resume_allow=[{','.join(refused)}] (or resume=null to "
            "start fresh)"
        )
    if changed:
        log.warning(
            "resume: %s: applying changed settings allowed by resume_allow: %s",
            where,
            _changes(changed, recorded, current),
        )
    return {k: (recorded.get(k, MISSING), current.get(k, MISSING)) for k in changed}


def _changes(keys: Sequence[str], recorded: dict[str, Any], current: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {_show(recorded.get(k, MISSING))} -> {_show(current.get(k, MISSING))}" for k in keys
    )


def optimizer_overrides(allowed: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """`{param-group key: new value}` of the allowed `optimizer.<key>` changes (lr, betas, ...)."""
    return {
        key.split(".", 1)[1]: new
        for key, (_, new) in allowed.items()
        if key.startswith("optimizer.")
        and key.count(".") == 1
        and new != MISSING
        and key != "optimizer._target_"
    }


def check_settings(train_problems: int, **sizes: int) -> None:
    """Refuse impossible trainer settings in one line each (the nodes check their own).

    Args:
        train_problems: how many training problems there are.
        **sizes: counts that must be >= 1 (`max_steps`, `prompts_per_step`).

    Raises:
        NudgekitError: the first setting that is out of range.
    """
    if not train_problems:
        raise NudgekitError("grpo: train_problems is empty")
    for name, value in sizes.items():
        if int(value) < 1:
            raise NudgekitError(f"grpo: {name} must be >= 1, got {value}")


def local_prompts(prompts_per_step: int, world: int) -> int:
    """Prompts per step of each of `world` processes (they must divide evenly)."""
    if prompts_per_step % world:
        raise NudgekitError(
            f"grpo: prompts_per_step={prompts_per_step} must be divisible by the number of "
            f"processes ({world})"
        )
    return prompts_per_step // world


def grad_accum_steps(
    prompts_per_step: int, world: int, group_size: int, mini_batches: int, micro_batch_size: int
) -> int:
    """Micro-batches accumulated per optimizer step on each of `world` processes."""
    rows = local_prompts(prompts_per_step, world) * group_size
    if rows % mini_batches:
        raise NudgekitError(
            f"grpo: {rows} rollouts per process do not split into mini_batches="
            f"{mini_batches} (prompts_per_step * group_size / world_size must divide)"
        )
    return math.ceil(rows // mini_batches / micro_batch_size)


# settings that define a GRPO run, besides the components `grpo_config` describes: top-level
# keys, and the fields of the grouped nodes that change the result
RUN_KEYS = ("prompts_per_step", "seed")
RUN_FIELDS = {
    "sampling": ("group_size", "max_new_tokens", "temperature", "top_p", "stop"),
    "update": ("ppo_epochs", "mini_batches", "advantage_scale", "mask_truncated", "tis_cap"),
}
# keys older checkpoints recorded before the settings were grouped: `old key (or prefix) -> new`
LEGACY_KEYS = {
    **{k: f"sampling.{k}" for k in RUN_FIELDS["sampling"]},
    **{k: f"update.{k}" for k in RUN_FIELDS["update"]},
    # NuRL's schedule settings were top-level arguments of its trainer subclass
    **{
        k: f"schedule.{k}"
        for k in (
            "injector",
            "start",
            "stage1_max_steps",
            "filter_n",
            "filter_solved",
            "filter_temperature",
        )
    },
}


def upgrade_keys(recorded: dict[str, Any] | None) -> dict[str, Any] | None:
    """A recorded flat config with the keys of older checkpoints renamed (`LEGACY_KEYS`)."""
    if recorded is None:
        return None
    out = {}
    for key, value in recorded.items():
        head, _, rest = key.partition(".")
        new = LEGACY_KEYS.get(head)
        out[f"{new}.{rest}" if new and rest else new or key] = value
    return out


def grpo_config(trainer: Any) -> dict[str, Any]:
    """The flat run config of a `GRPOTrainer`, named like the pipeline config.

    Left out: run length, logging, validation and checkpoint cadence and format
    (`checkpoint.*`), knobs that change speed or memory but not the result (engine, threads,
    `update.micro_batch_size`, `update.share_prompt`, `update.sort_by_length`,
    `update.gradient_checkpointing`), and the model's device.

    Args:
        trainer: the trainer (its constructor arguments are read back from its attributes).

    Returns:
        `{dotted key: JSON-able value}`.
    """
    prompt, model = describe(trainer.prompt), describe(trainer.model_spec)
    if isinstance(prompt, dict):
        prompt.pop("model", None)  # the same spec as `model`
    if isinstance(model, dict):
        model.pop("device", None)  # where it runs, not what it is
    problems = ([p.id, p.question, p.answer, p.hint] for p in trainer.train_problems)
    nodes = {"sampling": trainer.sampling, "update": trainer.update_settings}
    tree = {
        "model": model,
        "train_problems": digest(problems),
        "verifier": describe(trainer.verifier),
        "prompt": prompt,
        "optimizer": describe(trainer.optimizer_factory),
        "lr_scheduler": describe(trainer.scheduler_factory),
        "loss": describe(trainer.loss),
        "backend": describe(trainer.backend),
        "plateau": describe(trainer.plateau),
        **{name: describe(getattr(trainer, name)) for name in RUN_KEYS},
        **{
            node: {f: describe(getattr(nodes[node], f)) for f in fields}
            for node, fields in RUN_FIELDS.items()
        },
    }
    return flatten(tree)


def set_optimizer_values(optimizer: Any, scheduler: Any, values: dict[str, Any]) -> None:
    """Set optimizer hyperparameters in every param group, after its state was loaded.

    Loading an optimizer state restores the checkpoint's hyperparameters (lr, betas, weight
    decay, ...); a resume that allows a new value must set it again. A new `lr` becomes the
    scheduler's base lr, and the current lr keeps the schedule's factor (current / base).

    Args:
        optimizer: a torch optimizer (or DeepSpeed's wrapper, which exposes `param_groups`).
        scheduler: its lr scheduler, or None.
        values: `{param-group key: new value}`; keys the groups do not have are ignored.
    """
    groups = optimizer.param_groups
    for key, value in values.items():
        if key == "lr":
            continue
        for group in groups:
            if key in group:
                group[key] = tuple(value) if isinstance(group[key], tuple) else value
    if "lr" not in values:
        return
    new = float(values["lr"])
    bases = list(getattr(scheduler, "base_lrs", None) or [])
    for i, group in enumerate(groups):
        base = bases[i] if i < len(bases) else group.get("initial_lr", group["lr"])
        group["lr"] = new * (group["lr"] / base) if base else new
        if "initial_lr" in group:
            group["initial_lr"] = new
    if bases:
        scheduler.base_lrs = [new] * len(bases)
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [group["lr"] for group in groups]
