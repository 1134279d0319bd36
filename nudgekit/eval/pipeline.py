"""The evaluation pipeline: sample `n` completions per problem, verify, report pass@k.

Evaluation never shows hints: problems are rendered from their question alone. Outputs in the
run dir: `samples.jsonl` (per problem: prompt, completions, rewards), `summary.json`,
`results.md` and `pass_at_k.png`.

With a `decoder` (and a `nudging` model) the samples are written by a nudging decoder over the
eval engine's base model (`nudged.py`); the records then also carry who wrote which span
(`spans`, `nudge_tokens`, `base_tokens` per sample) and the summary the decoder's attribution
statistics under `nudging/`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from nudgekit.data.problem import Problem
from nudgekit.engines.base import Engine, GenerationRequest
from nudgekit.errors import NudgekitError
from nudgekit.eval.metrics import mean_pass_at_k
from nudgekit.eval.nudged import NudgedSampler
from nudgekit.reports import pass_at_k_plot, write_run_results
from nudgekit.rewards.functions import score_batch

log = logging.getLogger(__name__)


class EvalPipeline:
    """Evaluate one engine on one problem set with one verifier.

    Args:
        engine: the generation engine (its `tokenizer` renders chat prompts when `chat=True`).
        problems: the problems to evaluate (hints are ignored).
        verifier: `(completion, answer) -> float`.
        prompt: renders a problem into prompt text for this engine.
        n: samples per problem.
        k: the k values of pass@k to report (each <= n).
        max_new_tokens: completion budget.
        temperature: sampling temperature (0 = greedy, then n must be 1).
        top_p: nucleus mass.
        stop: stop strings.
        seed: base seed; problem i uses `seed + i`, so results do not depend on batching.
        batch_size: problems per engine call.
        table_rows: sample completions logged as a table.
        decoder: optional partial nudging decoder; then `engine` is the base model and samples
            come from nudging it with `nudging` (see `nudged.py`), `prompt` rendering the base
            model's prompt.
        nudging: `ModelSpec` of the nudging model (with `decoder`).
        nudging_prompt: renders a problem for the nudging model (with `decoder`).
        nudging_engine: partial engine for the nudging model (with `decoder`; None: hf).
    """

    def __init__(
        self,
        engine: Engine,
        problems: Sequence[Problem],
        verifier: Callable[[str, str], float],
        prompt: Callable[[Problem], str],
        n: int = 4,
        k: Sequence[int] = (1,),
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int = 0,
        batch_size: int = 16,
        table_rows: int = 32,
        decoder: Callable[..., Any] | None = None,
        nudging: Any = None,
        nudging_prompt: Callable[[Problem], str] | None = None,
        nudging_engine: Callable[..., Any] | None = None,
    ):
        bad_k = [kk for kk in k if not 1 <= kk <= n]
        if bad_k:
            raise NudgekitError(f"eval: every k must be in 1..n={n}, got {list(k)}")
        if temperature == 0 and n > 1:
            raise NudgekitError(
                f"eval: greedy decoding (temperature=0) with n={n} repeats one sample"
            )
        if not problems:
            raise NudgekitError("eval: the problem set is empty")
        self.engine, self.problems, self.verifier, self.prompt = engine, problems, verifier, prompt
        self.n, self.k, self.max_new_tokens = n, sorted(set(k)), max_new_tokens
        self.temperature, self.top_p, self.stop = temperature, top_p, list(stop)
        self.seed, self.batch_size, self.table_rows = seed, batch_size, table_rows
        self.nudged = (
            NudgedSampler(
                engine, nudging, decoder, prompt, nudging_prompt, batch_size, nudging_engine
            )
            if decoder is not None
            else None
        )

    def sample(self) -> list[dict]:
        """Generate and verify; one record per problem."""
        if self.nudged is not None:
            return self._sample_nudged()
        records = []
        bar = tqdm(total=len(self.problems), desc="eval", unit="problem")
        for start in range(0, len(self.problems), self.batch_size):
            batch = self.problems[start : start + self.batch_size]
            prompts = [self.prompt(p) for p in batch]
            requests = [
                GenerationRequest(
                    prompt=text,
                    n=self.n,
                    max_new_tokens=self.max_new_tokens,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    stop=self.stop,
                    seed=self.seed + start + i,
                )
                for i, text in enumerate(prompts)
            ]
            for problem, text, result in zip(batch, prompts, self.engine.generate(requests)):
                records.append(
                    self._record(
                        problem,
                        text,
                        [s.text for s in result.samples],
                        [s.finish_reason for s in result.samples],
                    )
                )
            bar.update(len(batch))
        bar.close()
        return records

    def _sample_nudged(self) -> list[dict]:
        """All samples from the nudging decoder, then verified like any other."""
        prompts, outputs = self.nudged.sample(
            self.problems, self.n, self.max_new_tokens, self.temperature, self.top_p, self.seed
        )
        records = []
        for problem, text, outs in zip(self.problems, prompts, outputs):
            record = self._record(
                problem, text, [o.text for o in outs], [o.stop_reason for o in outs]
            )
            record["spans"] = [[[s.start, s.end, s.source] for s in o.spans] for o in outs]
            record["nudge_tokens"] = [o.nudge_tokens for o in outs]
            record["base_tokens"] = [o.base_tokens for o in outs]
            records.append(record)
        return records

    def _record(
        self, problem: Problem, prompt: str, completions: list[str], finish_reasons: list[str]
    ) -> dict:
        answers = [problem.answer] * len(completions)
        rewards = [float(r) for r in score_batch(self.verifier, completions, answers)]
        return {
            "id": problem.id,
            "prompt": prompt,
            "answer": problem.answer,
            "completions": completions,
            "rewards": rewards,
            "finish_reasons": finish_reasons,
            "n": len(rewards),
            "correct": int(sum(r >= 1.0 for r in rewards)),
        }

    def summarize(self, records: list[dict]) -> dict[str, float]:
        """pass@k for every configured k, plus mean reward and truncation rate."""
        counts = [(r["n"], r["correct"]) for r in records]
        metrics = {f"eval/pass@{k}": mean_pass_at_k(counts, k) for k in self.k}
        rewards = [x for r in records for x in r["rewards"]]
        lengths = [f == "length" for r in records for f in r["finish_reasons"]]
        metrics["eval/mean_reward"] = sum(rewards) / len(rewards)
        metrics["eval/truncated_frac"] = sum(lengths) / len(lengths)
        metrics["eval/problems"] = float(len(records))
        if self.nudged is not None:
            metrics.update({f"nudging/{k}": v for k, v in self.nudged.stats.items()})
            metrics["nudging/seconds"] = self.nudged.seconds
        return metrics

    def run(self, tracker=None, run_dir: Path | None = None) -> dict[str, float]:
        records = self.sample()
        metrics = self.summarize(records)
        log.info("eval: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if run_dir is not None:
            self.write(Path(run_dir), records, metrics)
        if tracker is not None:
            tracker.log(metrics)
            rows = [
                {
                    "id": r["id"],
                    "prompt": r["prompt"],
                    "completion": r["completions"][0],
                    "reward": r["rewards"][0],
                    "answer": r["answer"],
                }
                for r in records[: self.table_rows]
            ]
            tracker.log_table("eval/samples", rows)
        return metrics

    def write(self, run_dir: Path, records: list[dict], metrics: dict[str, float]) -> None:
        write_run_results(run_dir, "samples.jsonl", records, metrics)
        curve = {k: metrics[f"eval/pass@{k}"] for k in self.k}
        pass_at_k_plot(run_dir / "pass_at_k.png", {"model": curve})
