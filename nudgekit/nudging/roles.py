"""Each model role's engine for nudging, built from config, loaded when needed and freed after.

A nudging run has up to four model roles: `base`, `nudging`, `aligned_large` and
`antiexpert`, each a `ModelSpec` (its own `device`, `dtype`). `RoleEngines` turns a role into an
engine:

- no engine configured: the in-process `HFEngine` over the role's spec, `batch_size` rows per
  forward (what the pipeline always did);
- a shared partial engine (`engine=hf|vllm|openai`): called with the role's model, so one config
  serves every role. An in-process engine gets the spec (and `max_batch_size=batch_size` when it
  takes one); an OpenAI-compatible engine gets the spec's `name_or_path` as the served model
  name (`vllm serve PATH` serves PATH) and, unless configured, the role's tokenizer (the chunked
  decoder reads token texts and counts output tokens with it);
- a per-role entry in `engines`: a mapping of keyword arguments laid over the shared engine for
  that role (e.g. another `base_url`: the paper's code talks to two servers), or a partial
  engine of its own.

`acquire(roles)` keeps at most the engines a step needs: before it loads anything it drops every
loaded engine the step does not use (`del`, `gc.collect()`, `torch.cuda.empty_cache()`), so a
large aligned model never shares memory with the base and nudging models. Engines are built
lazily, so a remote engine costs a tokenizer load and no weights.
"""

from __future__ import annotations

import functools
import gc
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nudgekit.errors import NudgekitError
from nudgekit.models.loading import check_device, resolve_model_path

log = logging.getLogger(__name__)
ROLES = ("base", "nudging", "aligned_large", "antiexpert")


def engine_class(factory: Any) -> Any:
    """The class a (partial) engine factory builds; `HFEngine` for None."""
    if factory is None:
        from nudgekit.engines.hf import HFEngine

        return HFEngine
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory


def is_remote(cls: Any) -> bool:
    """Whether engines of `cls` talk to a server (their `model` is a served name, not a spec)."""
    from nudgekit.engines.openai import OpenAIEngine

    return isinstance(cls, type) and issubclass(cls, OpenAIEngine)


def is_resident(cls: Any) -> bool:
    """Whether engines of `cls` hold a `transformers` model in this process (`.model`)."""
    from nudgekit.engines.hf import HFEngine

    return isinstance(cls, type) and issubclass(cls, HFEngine)


def require_resident(
    lm: Any, name: str, who: str, advice: str = "use decoder=chunked for other engines"
) -> None:
    """Raise a one-line error unless `lm` has an in-process `.model` module and `.tokenizer`.

    Args:
        lm: an engine (or anything with `.model` and `.tokenizer`).
        name: the model's role, for the message.
        who: what needs it ("the cached decoder", "proxy tuning").
        advice: what to do instead.
    """
    import torch

    if isinstance(getattr(lm, "model", None), torch.nn.Module) and hasattr(lm, "tokenizer"):
        return
    raise NudgekitError(
        f"nudging: {who} needs the {name} model in this process (.model and .tokenizer, e.g. "
        f"the hf engine), got {type(lm).__name__}; {advice}"
    )


def free_memory() -> None:
    """Collect garbage and return cached CUDA blocks to the driver (when CUDA is in use)."""
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class RoleEngines:
    """The engines of a nudging run's model roles (see module docstring).

    Args:
        specs: role -> `ModelSpec` (None for a role that is not configured).
        engine: the shared partial engine; None: the hf engine over each role's spec.
        engines: role -> None, a mapping of keyword arguments over `engine`, or a partial engine.
        batch_size: `max_batch_size` of in-process engines that take one.
    """

    def __init__(
        self,
        specs: Mapping[str, Any],
        engine: Callable[..., Any] | None = None,
        engines: Mapping[str, Any] | None = None,
        batch_size: int = 16,
    ) -> None:
        engines = dict(engines or {})
        unknown = sorted(set(engines) - set(ROLES))
        if unknown:
            raise NudgekitError(f"nudging: unknown engine roles {unknown} (known: {list(ROLES)})")
        self.specs, self.engine, self.batch_size = dict(specs), engine, batch_size
        self.overrides = {role: _plain(engines.get(role)) for role in ROLES}
        self.loaded: dict[str, Any] = {}

    def factory(self, role: str) -> tuple[Any, dict[str, Any]]:
        """The role's partial engine (None: hf) and the keyword arguments laid over it."""
        override = self.overrides.get(role)
        if callable(override):
            return override, {}
        return self.engine, dict(override or {})

    def cls(self, role: str) -> Any:
        return engine_class(self.factory(role)[0])

    def preflight(self) -> None:
        """Resolve every configured model (tokenizers need it) and check in-process devices."""
        for role, spec in self.specs.items():
            if spec is None:
                continue
            if not is_remote(self.cls(role)):
                check_device(spec.device)
            resolve_model_path(spec.name_or_path, getattr(spec, "revision", None))

    def build(self, role: str) -> Any:
        """A new engine for `role` (loads the model for in-process engines)."""
        spec = self.specs[role]
        factory, extra = self.factory(role)
        cls = engine_class(factory)
        factory = cls if factory is None else factory
        kwargs: dict[str, Any] = {}
        if is_remote(cls):
            kwargs["model"] = spec.name_or_path
            if _bound(factory, "tokenizer") is None and "tokenizer" not in extra:
                kwargs["tokenizer"] = spec.load_tokenizer()
        else:
            kwargs["model"] = spec
            if "max_batch_size" in _parameters(cls):
                kwargs["max_batch_size"] = self.batch_size
        return factory(**{**kwargs, **extra})

    def acquire(self, roles: Iterable[str]) -> dict[str, Any]:
        """The engines of `roles`, loading what is missing after freeing every other engine."""
        roles = list(roles)
        missing = [r for r in roles if r not in self.loaded]
        if missing:
            self.release([r for r in self.loaded if r not in roles])
            for role in missing:
                log.info("nudging: loading the %s model (%s)", role, self.cls(role).__name__)
                self.loaded[role] = self.build(role)
        return {r: self.loaded[r] for r in roles}

    def release(self, roles: Iterable[str] | None = None) -> None:
        """Drop the engines of `roles` (default: all) and free their memory."""
        roles = list(self.loaded if roles is None else roles)
        if not roles:
            return
        for role in roles:
            log.info("nudging: freeing the %s model", role)
            del self.loaded[role]
        free_memory()


def _plain(value: Any) -> Any:
    """A config mapping as a plain dict (a partial engine or None as it is)."""
    if value is None or callable(value):
        return value
    from omegaconf import DictConfig, OmegaConf

    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return dict(value)
    raise NudgekitError(
        f"nudging: an engine override must be a mapping or a partial engine, got {value!r}"
    )


def _bound(factory: Any, name: str) -> Any:
    """The value a partial binds to keyword `name` (None when unbound)."""
    return factory.keywords.get(name) if isinstance(factory, functools.partial) else None


def _parameters(cls: Any) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(cls).parameters
