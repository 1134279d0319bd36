"""`NudgingPipeline`: nudge a base model with a small aligned model on a problem set, next to
the baselines, and write what each model wrote.

Outputs in the run dir: `nudging.jsonl` (per item: id, question, answer, prompt_base,
prompt_nudging, output, spans `[start, end, source]`, nudged span texts, token counts, stop
reason, rounds, correctness, and each baseline's output and correctness), `summary.json`,
`results.md` and `nudging.html` (nudged spans highlighted).

Metrics: `nudging/accuracy` (and `/lenient_accuracy` with a second verifier), the attribution
statistics of `run_stats` under `nudging/` (`nudge_token_share`, `intervention_rate`, `rounds`,
...), `nudging/seconds`, and `<baseline>/accuracy` for `base_only` (no stop strings, as in the
reference), `base_only_stop` (with `base_stop`), `nudger_only`, `aligned_large` and
`proxy_tuning` (the last two only when their models are configured).

Before anything is loaded every model reference is resolved and every device checked, so a
real-scale config on a machine without a GPU or hub access fails in seconds with one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.errors import NudgekitError
from nudgekit.eval.report import write_run_results
from nudgekit.models.loading import check_device, resolve_model_path
from nudgekit.nudging.attribution import NUDGE, run_stats
from nudgekit.nudging.baselines import ProxyTuningDecoder, generate_texts
from nudgekit.nudging.report import write_page

log = logging.getLogger(__name__)
BASELINES = ("base_only", "base_only_stop", "nudger_only", "aligned_large", "proxy_tuning")


class NudgingPipeline:
    """Nudging vs baselines on one problem set.

    Args:
        base: `ModelSpec` of the large base model.
        nudging: `ModelSpec` of the small aligned (nudging) model.
        problems: the problems.
        verifier: `(completion, answer) -> float`.
        base_prompt: renders a problem for the base model (e.g. `ChatPrompt(chat=False)`).
        nudging_prompt: renders a problem for the nudging model (its chat template).
        decoder: a partial decoder class (`CachedNudgingDecoder` or `ChunkedNudgingDecoder`),
            called with `base`, `nudging` (engines), `max_new_tokens` and `seed`.
        baselines: which of `BASELINES` to run (those needing an unconfigured model are skipped).
        aligned_large: `ModelSpec` of the large aligned model, for the `aligned_large` baseline.
        aligned_prompt: renders a problem for it (defaults to `nudging_prompt` rendered text).
        antiexpert: `ModelSpec` of the untuned small model, for `proxy_tuning`.
        lenient_verifier: optional second verifier reported as `lenient_accuracy`.
        base_stop: stop strings of the `base_only_stop` baseline.
        max_new_tokens: output budget (base tokens for nudging; each model's own otherwise).
        batch_size: questions decoded at once by the baselines' engines.
        seed: sampling seed.
        html_items: items shown on the HTML page.
        table_rows: items logged to the tracker as a table.
    """

    def __init__(
        self,
        base: Any,
        nudging: Any,
        problems: Sequence[Problem],
        verifier: Callable[[str, str], float],
        base_prompt: Callable[[Problem], str],
        nudging_prompt: Callable[[Problem], str],
        decoder: Callable[..., Any],
        baselines: Sequence[str] = ("base_only", "base_only_stop", "nudger_only"),
        aligned_large: Any = None,
        aligned_prompt: Callable[[Problem], str] | None = None,
        antiexpert: Any = None,
        lenient_verifier: Callable[[str, str], float] | None = None,
        base_stop: Sequence[str] = ("\n\n", "Question:"),
        max_new_tokens: int = 512,
        batch_size: int = 16,
        seed: int = 0,
        html_items: int = 100,
        table_rows: int = 32,
    ) -> None:
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise NudgekitError(f"nudging: unknown baselines {unknown} (known: {list(BASELINES)})")
        if not problems:
            raise NudgekitError("nudging: the problem set is empty")
        self.specs = {
            "base": base,
            "nudging": nudging,
            "aligned_large": aligned_large,
            "antiexpert": antiexpert,
        }
        self.problems, self.verifier, self.lenient = list(problems), verifier, lenient_verifier
        self.base_prompt, self.nudging_prompt = base_prompt, nudging_prompt
        self.aligned_prompt = aligned_prompt
        self.decoder, self.baselines, self.base_stop = decoder, list(baselines), list(base_stop)
        self.max_new_tokens, self.batch_size, self.seed = max_new_tokens, batch_size, seed
        self.html_items, self.table_rows = html_items, table_rows
        self.preflight()

    def preflight(self) -> None:
        """Fail fast (one line) on a missing GPU, an unreachable hub id or a bad path."""
        for spec in self.specs.values():
            if spec is not None:
                check_device(spec.device)
                resolve_model_path(spec.name_or_path, getattr(spec, "revision", None))

    def _engine(self, spec: Any) -> Any:
        from nudgekit.engines.hf import HFEngine

        return HFEngine(spec.load_model(), spec.load_tokenizer(), max_batch_size=self.batch_size)

    def run(self, tracker: Any = None, run_dir: Path | str | None = None) -> dict[str, float]:
        base, nudging = self._engine(self.specs["base"]), self._engine(self.specs["nudging"])
        prompts_b = [self.base_prompt(p) for p in self.problems]
        prompts_n = [self.nudging_prompt(p) for p in self.problems]
        decoder = self.decoder(
            base=base, nudging=nudging, max_new_tokens=self.max_new_tokens, seed=self.seed
        )
        start = time.perf_counter()
        outputs = decoder.decode(prompts_b, prompts_n)
        seconds = time.perf_counter() - start
        records = [
            self._record(p, pb, pn, o)
            for p, pb, pn, o in zip(self.problems, prompts_b, prompts_n, outputs)
        ]
        metrics = {f"nudging/{k}": v for k, v in run_stats(outputs).items()}
        metrics["nudging/seconds"] = seconds
        metrics.update(self._scores("nudging", [o.text for o in outputs], records, None))
        for name, texts in self._run_baselines(base, nudging, prompts_b, prompts_n).items():
            metrics.update(self._scores(name, texts, records, name))
        log.info("nudging: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if run_dir is not None:
            self.write(Path(run_dir), records, metrics)
        if tracker is not None:
            tracker.log(metrics)
            tracker.log_table(
                "nudging/outputs", [_table_row(r) for r in records[: self.table_rows]]
            )
        return metrics

    def _record(self, problem: Problem, prompt_b: str, prompt_n: str, out: Any) -> dict:
        spans = [[s.start, s.end, s.source] for s in out.spans]
        return {
            "id": problem.id,
            "question": problem.question,
            "answer": problem.answer,
            "prompt_base": prompt_b,
            "prompt_nudging": prompt_n,
            "output": out.text,
            "spans": spans,
            "nudged_spans": out.span_texts(NUDGE),
            "nudge_tokens": out.nudge_tokens,
            "base_tokens": out.base_tokens,
            "stop_reason": out.stop_reason,
            "rounds": out.rounds,
            "baselines": {},
        }

    def _scores(self, name: str, texts: list[str], records: list[dict], key: str | None):
        correct = [float(self.verifier(t, r["answer"])) for t, r in zip(texts, records)]
        lenient = (
            [float(self.lenient(t, r["answer"])) for t, r in zip(texts, records)]
            if (self.lenient)
            else None
        )
        for i, r in enumerate(records):
            target = r if key is None else r["baselines"].setdefault(key, {"output": texts[i]})
            target["correct"] = correct[i]
            if lenient is not None:
                target["lenient_correct"] = lenient[i]
        metrics = {f"{name}/accuracy": sum(correct) / len(correct)}
        if lenient is not None:
            metrics[f"{name}/lenient_accuracy"] = sum(lenient) / len(lenient)
        return metrics

    def _run_baselines(self, base, nudging, prompts_b, prompts_n) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        gen = dict(max_new_tokens=self.max_new_tokens, seed=self.seed)
        if "base_only" in self.baselines:
            out["base_only"] = generate_texts(base, prompts_b, **gen)
        if "base_only_stop" in self.baselines:
            out["base_only_stop"] = generate_texts(base, prompts_b, stop=self.base_stop, **gen)
        if "nudger_only" in self.baselines:
            out["nudger_only"] = generate_texts(nudging, prompts_n, **gen)
        if "aligned_large" in self.baselines and self.specs["aligned_large"] is not None:
            large = self._engine(self.specs["aligned_large"])
            render = self.aligned_prompt or self.nudging_prompt
            out["aligned_large"] = generate_texts(large, [render(p) for p in self.problems], **gen)
            del large
        if "proxy_tuning" in self.baselines and self.specs["antiexpert"] is not None:
            anti = self._engine(self.specs["antiexpert"])
            proxy = ProxyTuningDecoder(base, nudging, anti, batch_size=self.batch_size, **gen)
            out["proxy_tuning"] = proxy.decode(prompts_b, prompts_n)
        return out

    def write(self, run_dir: Path, records: list[dict], metrics: dict[str, float]) -> None:
        write_run_results(run_dir, "nudging.jsonl", records, metrics)
        write_page(run_dir / "nudging.html", records[: self.html_items], metrics, "nudging")


def _table_row(record: dict) -> dict:
    return {
        "id": record["id"],
        "output": record["output"],
        "nudged": " | ".join(record["nudged_spans"]),
        "correct": record.get("correct"),
        "nudge_tokens": record["nudge_tokens"],
        "base_tokens": record["base_tokens"],
    }
