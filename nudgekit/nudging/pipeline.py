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

Engines come from config (`nudging.roles`): the hf engine over each role's `ModelSpec` (on its
own `device`) by default, `engine=vllm|openai` for every role, or per-role overrides in
`engines`. Models are loaded when a step needs them and freed before a step that needs others:
nudging and the base/nudger baselines share the base and nudging models, proxy tuning adds the
anti-expert, and aligned-large runs last, alone in memory.

Before anything is loaded every model reference is resolved and every in-process device
checked, and decoders that need in-process models are matched against their engines, so a
real-scale config on a machine without a GPU or hub access fails in seconds with one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.errors import NudgekitError
from nudgekit.nudging.attribution import NUDGE, run_stats
from nudgekit.nudging.baselines import ProxyTuningDecoder, generate_texts
from nudgekit.nudging.cached import CachedNudgingDecoder
from nudgekit.nudging.report import write_page
from nudgekit.nudging.roles import RoleEngines, engine_class, is_resident
from nudgekit.reports import write_run_results

log = logging.getLogger(__name__)
BASELINES = ("base_only", "base_only_stop", "nudger_only", "aligned_large", "proxy_tuning")
# the models each baseline needs, in the order they run: aligned-large last, alone in memory
NEEDS = {
    "base_only": ("base",),
    "base_only_stop": ("base",),
    "nudger_only": ("nudging",),
    "proxy_tuning": ("base", "nudging", "antiexpert"),
    "aligned_large": ("aligned_large",),
}


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
        batch_size: questions decoded at once by the baselines' engines (`max_batch_size` of
            in-process engines) and by proxy tuning.
        seed: sampling seed.
        html_items: items shown on the HTML page.
        table_rows: items logged to the tracker as a table.
        engine: partial engine for every role, called with the role's model (`nudging.roles`);
            None: the hf engine over each role's `ModelSpec`.
        engines: per-role overrides (`base`, `nudging`, `aligned_large`, `antiexpert`): None, a
            mapping of keyword arguments over `engine` (e.g. `base_url`), or a partial engine.
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
        engine: Callable[..., Any] | None = None,
        engines: Mapping[str, Any] | None = None,
    ) -> None:
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise NudgekitError(f"nudging: unknown baselines {unknown} (known: {list(BASELINES)})")
        if not problems:
            raise NudgekitError("nudging: the problem set is empty")
        specs = {
            "base": base,
            "nudging": nudging,
            "aligned_large": aligned_large,
            "antiexpert": antiexpert,
        }
        self.roles = RoleEngines(specs, engine, engines, batch_size)
        self.problems, self.verifier, self.lenient = list(problems), verifier, lenient_verifier
        self.base_prompt, self.nudging_prompt = base_prompt, nudging_prompt
        self.aligned_prompt = aligned_prompt
        self.decoder, self.baselines, self.base_stop = decoder, list(baselines), list(base_stop)
        self.max_new_tokens, self.batch_size, self.seed = max_new_tokens, batch_size, seed
        self.html_items, self.table_rows = html_items, table_rows
        self.preflight()

    @property
    def specs(self) -> dict[str, Any]:
        return self.roles.specs

    def preflight(self) -> None:
        """Fail fast (one line) on a missing GPU, an unreachable hub id, a bad path, or a
        decoder or baseline that needs in-process models given engines that have none."""
        self.roles.preflight()
        decoder = engine_class(self.decoder)
        if isinstance(decoder, type) and issubclass(decoder, CachedNudgingDecoder):
            self._check_resident("the cached decoder", ("base", "nudging"), "use decoder=chunked")
        if "proxy_tuning" in self.baselines and self.specs["antiexpert"] is not None:
            advice = "drop proxy_tuning from pipeline.baselines or use the hf engine"
            self._check_resident("proxy tuning", NEEDS["proxy_tuning"], advice)

    def _check_resident(self, who: str, roles: Sequence[str], advice: str) -> None:
        for role in roles:
            cls = self.roles.cls(role)
            if not is_resident(cls):
                raise NudgekitError(
                    f"nudging: {who} needs the {role} model in this process (the hf engine), "
                    f"not {cls.__name__}; {advice}"
                )

    def run(self, tracker: Any = None, run_dir: Path | str | None = None) -> dict[str, float]:
        prompts_b = [self.base_prompt(p) for p in self.problems]
        prompts_n = [self.nudging_prompt(p) for p in self.problems]
        try:
            outputs, seconds = self._nudge(prompts_b, prompts_n)
            texts = self._run_baselines(prompts_b, prompts_n)
        finally:
            self.roles.release()
        records = [
            self._record(p, pb, pn, o)
            for p, pb, pn, o in zip(self.problems, prompts_b, prompts_n, outputs)
        ]
        metrics = {f"nudging/{k}": v for k, v in run_stats(outputs).items()}
        metrics["nudging/seconds"] = seconds
        metrics.update(self._scores("nudging", [o.text for o in outputs], records, None))
        for name in BASELINES:  # reported in a fixed order, whatever order they ran in
            if name in texts:
                metrics.update(self._scores(name, texts[name], records, name))
        log.info("nudging: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if run_dir is not None:
            self.write(Path(run_dir), records, metrics)
        if tracker is not None:
            tracker.log(metrics)
            tracker.log_table(
                "nudging/outputs", [_table_row(r) for r in records[: self.table_rows]]
            )
        return metrics

    def _nudge(self, prompts_b: list[str], prompts_n: list[str]) -> tuple[list[Any], float]:
        """The nudged outputs and the seconds decoding took (model loading not counted)."""
        lms = self.roles.acquire(["base", "nudging"])
        decoder = self.decoder(
            base=lms["base"], nudging=lms["nudging"], max_new_tokens=self.max_new_tokens,
            seed=self.seed,
        )  # fmt: skip
        start = time.perf_counter()
        outputs = decoder.decode(prompts_b, prompts_n, progress=True)
        return outputs, time.perf_counter() - start

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

    def _run_baselines(self, prompts_b, prompts_n) -> dict[str, list[str]]:
        """Each configured baseline's texts; a step frees the models the next one does not use
        (each runs in its own call, so no local keeps an engine alive past it)."""
        prompts = {"base": prompts_b, "nudging": prompts_n}
        out: dict[str, list[str]] = {}
        for name, roles in NEEDS.items():
            if name in self.baselines and all(self.specs[r] is not None for r in roles):
                out[name] = self._baseline(name, self.roles.acquire(roles), prompts)
        return out

    def _baseline(self, name: str, lms: dict[str, Any], prompts: dict[str, list[str]]):
        gen = dict(max_new_tokens=self.max_new_tokens, seed=self.seed)
        if name == "proxy_tuning":
            proxy = ProxyTuningDecoder(*lms.values(), batch_size=self.batch_size, **gen)
            return proxy.decode(prompts["base"], prompts["nudging"])
        if name == "aligned_large":
            render = self.aligned_prompt or self.nudging_prompt
            rendered = [render(p) for p in self.problems]
            return generate_texts(lms["aligned_large"], rendered, **gen)
        stop = self.base_stop if name == "base_only_stop" else ()
        (role,) = lms
        return generate_texts(lms[role], prompts[role], stop=stop, **gen)

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
