"""`VLLMEngine`: the engine contract over vLLM's offline `LLM` (GPU runs).

Cannot run on a CPU-only box; constructing it without vLLM raises a one-line `NudgekitError`.
Untested here (no GPU): it maps the contract onto vLLM's documented API only.

Differences from the `hf` engine:

- text prompts are tokenised here as in `hf` (`engines.tokens.prompt_ids`: the tokenizer's BOS
  once, at the start) and sent as `TokensPrompt`, so both engines see the same prompt ids;
- log-probs follow vLLM's `logprobs_mode` (default `raw_logprobs`: temperature 1, before any
  processing), so at T != 1 they differ from `hf`'s `log_softmax(logits / T)`; pass
  `llm_kwargs={"logprobs_mode": "processed_logprobs"}` on vLLM >= 0.10.2 for post-temperature
  values (vLLM applies top-p before computing those);
- seeds: `SamplingParams(seed=...)` per request; vLLM documents no batch-independence guarantee.
"""

from __future__ import annotations

from typing import Any

from nudgekit.engines.base import GenerationRequest, GenerationResult, Sample
from nudgekit.engines.tokens import prompt_ids, start_ids
from nudgekit.errors import NudgekitError


class VLLMEngine:
    """Generate with an in-process vLLM `LLM`.

    Args:
        model: a `ModelSpec` or a path / hub id / `zoo:` name.
        dtype: vLLM dtype ("auto", "bfloat16", "float16", "float32").
        gpu_memory_utilization: share of GPU memory vLLM may take.
        tensor_parallel_size: GPUs per model.
        max_model_len: context length cap (None: the model's).
        llm_kwargs: extra keyword arguments for `vllm.LLM`.
    """

    def __init__(
        self,
        model: Any,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        llm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        try:
            import vllm
        except ImportError:
            raise NudgekitError(
                "vllm engine needs `pip install nudgekit[vllm]` and a GPU"
            ) from None
        from nudgekit.models import resolve_model_path

        trust = bool(getattr(model, "trust_remote_code", False))
        revision = getattr(model, "revision", None)
        name = getattr(model, "name_or_path", model)
        self.llm = vllm.LLM(
            model=resolve_model_path(name, revision),
            revision=revision,
            dtype=dtype,
            trust_remote_code=trust,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            **(llm_kwargs or {}),
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._start = start_ids(self.tokenizer)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Run every request in one `LLM.generate` call (vLLM schedules the batch itself)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts, params = [], []
        for req in requests:
            ids = req.prompt
            if isinstance(ids, str):
                ids = prompt_ids(self.tokenizer, ids, self._start)
            prompts.append(TokensPrompt(prompt_token_ids=list(ids)))
            params.append(
                SamplingParams(
                    n=req.n,
                    temperature=req.temperature,
                    top_p=req.top_p,
                    max_tokens=req.max_new_tokens,
                    stop=list(req.stop) or None,
                    seed=req.seed,
                    logprobs=1 if (req.logprobs or req.top_logprobs) else None,
                )
            )
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        return [
            GenerationResult(
                prompt_ids=list(out.prompt_token_ids),
                samples=[_sample(c, req) for c in out.outputs],
            )
            for out, req in zip(outputs, requests)
        ]


def _sample(out: Any, req: GenerationRequest) -> Sample:
    """Convert one vLLM `CompletionOutput`."""
    if out.finish_reason == "length":
        reason = "length"
    else:  # stop_reason: the stop string, a stop token id, or None for EOS
        reason = "stop" if isinstance(out.stop_reason, str) else "eos"
    sample = Sample(token_ids=list(out.token_ids), text=out.text, finish_reason=reason)
    if out.logprobs is not None:
        chosen = [step[t] for step, t in zip(out.logprobs, out.token_ids)]
        top = [min(step.items(), key=lambda kv: kv[1].rank) for step in out.logprobs]
        if req.logprobs:
            sample.logprobs = [lp.logprob for lp in chosen]
        if req.top_logprobs:
            sample.top_token_ids = [t for t, _ in top]
            sample.top_logprobs = [lp.logprob for _, lp in top]
    return sample
