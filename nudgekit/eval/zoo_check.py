"""`TinyWorldCheck`: measure properties P1-P4 of the built zoo and write a JSON + markdown report.

- P1: tiny-policy pass@1 on easy test problems, and the share of hard problems with 0/`samples`
  correct at `temperature` (no GRPO signal there).
- P2: on those 0/`samples` hard problems, the share lifted to >= 1 correct by each oracle hint
  level, and by self-generated hints (tiny-policy writes an explanation from question + answer,
  then an abstract hint from question + answer + explanation; leaking hints are dropped).
- P3: greedy strict vs format-aware accuracy and format rate of tiny-base-large, tiny-aligned-small
  and tiny-aligned-large on chat-formatted test prompts (levels 1-4).
- P4: rebuilding `p4_models` from scratch gives the weight hash of the cached (first) build.

Thresholds are the issue's; nothing here is tuned to make a property hold.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nudgekit.errors import NudgekitError
from nudgekit.eval.zoo_sampling import ZooModel, correct_counts, format_scores, leaks
from nudgekit.zoo import prompts
from nudgekit.zoo.registry import NAMES, full_name, read_meta, spec_of
from nudgekit.zoo.resolve import resolve
from nudgekit.zoo.tasks import HINT_LEVELS, tiny_problems

CHECK_FILE = "tinyworld_check"


class TinyWorldCheck:
    """Pipeline measuring P1-P4 on the zoo of one variant.

    Args:
        variant: zoo variant ("full" or "test").
        n_easy: easy (levels 1-2) test problems for pass@1 (capped by what the split has).
        n_hard: hard-split problems for the 0/`samples` measurement.
        n_format: test problems (levels 1-4) for P3.
        samples: samples per problem (the GRPO group size G).
        temperature: sampling temperature for P1/P2.
        seed: sampling seed.
        max_new_tokens: completion budget for chat models (characters for the char tokenizer).
        base_max_new_tokens: completion budget for the BPE models in P3.
        p4_models: zoo names (without variant) rebuilt from scratch for P4.
        max_batch_size: sample rows decoded at once.
    """

    def __init__(
        self,
        variant: str = "full",
        n_easy: int = 64,
        n_hard: int = 200,
        n_format: int = 200,
        samples: int = 8,
        temperature: float = 1.0,
        seed: int = 0,
        max_new_tokens: int = 96,
        base_max_new_tokens: int = 64,
        p4_models: list[str] | tuple[str, ...] = ("tiny-aligned-small",),
        max_batch_size: int = 256,
    ) -> None:
        if samples < 1:
            raise NudgekitError(f"tinyworld_check: samples={samples} must be >= 1")
        bad = [m for m in p4_models if m not in NAMES]
        if bad:
            raise NudgekitError(f"tinyworld_check: p4_models {bad} not in {list(NAMES)}")
        self.variant = variant
        self.n_easy, self.n_hard, self.n_format = n_easy, n_hard, n_format
        self.samples, self.temperature, self.seed = samples, temperature, seed
        self.max_new_tokens, self.base_max_new_tokens = max_new_tokens, base_max_new_tokens
        self.p4_models = list(p4_models)
        self.max_batch_size = max_batch_size

    def _load(self, base: str) -> ZooModel:
        return ZooModel(resolve(full_name(base, self.variant)), self.max_batch_size)

    def _sample(self, model: ZooModel, prompts_: list[str], keys: list[str], **kw: Any):
        kw.setdefault("n", self.samples)
        kw.setdefault("temperature", self.temperature)
        kw.setdefault("max_new_tokens", self.max_new_tokens)
        return model.sample(prompts_, keys, seed=self.seed, **kw)

    # ------------------------------------------------------------------ P1 / P2

    def p1(self, policy: ZooModel) -> tuple[dict, list]:
        tok = policy.tokenizer
        easy = tiny_problems("test", level="easy", n=self.n_easy, seed=self.seed)
        outs = self._sample(
            policy, [prompts.chat_prompt(tok, p.question) for p in easy], [p.id for p in easy]
        )
        pass1 = statistics.fmean(
            c / self.samples for c in correct_counts(outs, [p.answer for p in easy])
        )
        hard = tiny_problems("hard", n=self.n_hard, seed=self.seed)
        outs = self._sample(
            policy, [prompts.chat_prompt(tok, p.question) for p in hard], [p.id for p in hard]
        )
        counts = correct_counts(outs, [p.answer for p in hard])
        zero = [p for p, c in zip(hard, counts) if c == 0]
        values = {
            "easy_pass@1": pass1,
            "n_easy": len(easy),
            "hard_pass@1": statistics.fmean(c / self.samples for c in counts),
            "hard_zero_frac": len(zero) / len(hard),
            "n_hard": len(hard),
            "n_hard_zero": len(zero),
        }
        values["holds"] = pass1 >= 0.5 and values["hard_zero_frac"] >= 0.3
        return values, zero

    def self_hints(self, policy: ZooModel, problems: list) -> dict[str, str]:
        """Hints written by the policy itself (greedy): explanation, then abstract hint."""
        tok = policy.tokenizer
        keys = [p.id for p in problems]
        expl = policy.sample(
            [prompts.explain_prompt(tok, p.question, p.answer) for p in problems],
            keys,
            n=1,
            temperature=0.0,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
        )
        cue = policy.sample(
            [
                prompts.cue_prompt(tok, p.question, p.answer, e[0].strip())
                for p, e in zip(problems, expl)
            ],
            keys,
            n=1,
            temperature=0.0,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
        )
        return {p.id: c[0].strip() for p, c in zip(problems, cue)}

    def p2(self, policy: ZooModel, zero: list) -> dict:
        values: dict[str, Any] = {"n_zero": len(zero)}
        for level in HINT_LEVELS:
            values[f"lift_{level}"] = self._lift(
                policy, zero, [p.meta["hints"][level] for p in zero], level
            )
        made = self.self_hints(policy, zero) if zero else {}
        kept = [p for p in zero if made.get(p.id) and not leaks(made[p.id], p.answer)]
        values["self_hints_dropped_leak_or_empty"] = len(zero) - len(kept)
        values["self_hint_matches_oracle"] = (
            statistics.fmean(made[p.id] == p.meta["hints"]["abstract"] for p in zero)
            if zero
            else 0.0
        )
        lifted = self._lifted(policy, kept, [made[p.id] for p in kept], "self")
        values["lift_self"] = lifted / len(zero) if zero else 0.0
        values["oracle_leaks"] = {
            lv: sum(leaks(p.meta["hints"][lv], p.answer) for p in zero)
            for lv in ("abstract", "partial")
        }
        values["self_hint_examples"] = [
            {"question": p.question, "hint": made.get(p.id, "")} for p in zero[:5]
        ]
        values["holds"] = (
            bool(zero) and values["lift_abstract"] >= 0.5 and values["lift_self"] >= 0.25
        )
        return values

    def _lifted(self, policy: ZooModel, problems: list, hints: list[str], tag: str) -> int:
        if not problems:
            return 0
        tok = policy.tokenizer
        outs = self._sample(
            policy,
            [prompts.chat_prompt(tok, p.question, h) for p, h in zip(problems, hints)],
            [f"{p.id}/{tag}" for p in problems],
        )
        return sum(c > 0 for c in correct_counts(outs, [p.answer for p in problems]))

    def _lift(self, policy: ZooModel, zero: list, hints: list[str], tag: str) -> float:
        return self._lifted(policy, zero, hints, tag) / len(zero) if zero else 0.0

    # ------------------------------------------------------------------ P3

    def p3(self) -> dict:
        problems = tiny_problems("test", n=self.n_format, seed=self.seed)
        answers = [p.answer for p in problems]
        keys = [p.id for p in problems]
        values: dict[str, Any] = {"n": len(problems)}
        for base in ("tiny-base-large", "tiny-aligned-small", "tiny-aligned-large"):
            model = self._load(base)
            budget = (
                self.max_new_tokens
                if spec_of(base).tokenizer == "char"
                else self.base_max_new_tokens
            )
            chat = [prompts.chat_prompt(model.tokenizer, p.question) for p in problems]
            outs = self._sample(model, chat, keys, n=1, temperature=0.0, max_new_tokens=budget)
            values[base] = format_scores([o[0] for o in outs], answers)
            if base == "tiny-base-large":  # its own plain prompt, for reference
                plain = [prompts.base_prompt(p.question) for p in problems]
                outs = self._sample(model, plain, keys, n=1, temperature=0.0, max_new_tokens=budget)
                values["tiny-base-large/plain_prompt"] = format_scores(
                    [o[0] for o in outs], answers
                )
                values["base_example_completion"] = outs[0][0]
        b, s, a = (
            values["tiny-base-large"],
            values["tiny-aligned-small"],
            values["tiny-aligned-large"],
        )
        values["holds"] = (
            b["lenient"] - b["strict"] >= 0.25  # the base reasons but misses the format
            and s["format"] > b["format"]  # the small aligned model follows the format
            and s["lenient"] < a["lenient"]  # ... but reasons worse than the large aligned one
        )
        return values

    # ------------------------------------------------------------------ P4

    def p4(self) -> dict:
        from nudgekit.zoo.build import build_into

        values: dict[str, Any] = {"cached_weight_hashes": {}}
        for base in NAMES:
            values["cached_weight_hashes"][base] = read_meta(full_name(base, self.variant))[
                "weight_hash"
            ]
        holds = True
        for base in self.p4_models:
            name = full_name(base, self.variant)
            # The cached build is the first build; one fresh rebuild is the second.
            with tempfile.TemporaryDirectory() as tmp:
                again = build_into(name, spec_of(name), Path(tmp), progress=False)["weight_hash"]
            cached = values["cached_weight_hashes"][base]
            same = again == cached
            values[f"rebuild/{base}"] = {"cached": cached, "rebuilt": again, "identical": same}
            holds = holds and same
        values["holds"] = holds
        return values

    # ------------------------------------------------------------------ run

    def run(self, tracker: Any = None, run_dir: Path | str = ".") -> dict[str, float]:
        """Build what is missing, measure P1-P4, write tinyworld_check.{json,md} into run_dir."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        for base in NAMES:
            resolve(full_name(base, self.variant))
        policy = self._load("tiny-policy")
        p1, zero = self.p1(policy)
        report = {"P1": p1, "P2": self.p2(policy, zero)}
        del policy
        report["P3"] = self.p3()
        report["P4"] = self.p4()
        report["meta"] = {
            "variant": self.variant,
            "samples": self.samples,
            "temperature": self.temperature,
            "seed": self.seed,
            "seconds": time.perf_counter() - start,
            "build_seconds": {
                b: read_meta(full_name(b, self.variant))["build_seconds"] for b in NAMES
            },
        }
        (run_dir / f"{CHECK_FILE}.json").write_text(json.dumps(report, indent=2, default=str))
        rows = table_rows(report)
        (run_dir / f"{CHECK_FILE}.md").write_text(markdown(rows))
        metrics = flat_metrics(report)
        if tracker is not None:
            tracker.log(metrics)
            tracker.log_table(CHECK_FILE, rows)
            tracker.summary(metrics)
        return metrics


def flat_metrics(report: dict) -> dict[str, float]:
    """Numeric leaves of the report as `tinyworld/<P>/<key>` floats (holds as 0/1)."""
    out: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(node, (bool, int, float)):
            out[prefix] = float(node)

    for prop in ("P1", "P2", "P3", "P4"):
        walk(f"tinyworld/{prop}", report[prop])
    return out


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table_rows(report: dict) -> list[dict[str, str]]:
    """One row per measured value: property, quantity, value, and the property's verdict."""
    rows = []
    for prop in ("P1", "P2", "P3", "P4"):
        for key, v in report[prop].items():
            if key == "holds" or key.endswith("examples") or key == "base_example_completion":
                continue
            if isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()):
                v = ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
            elif isinstance(v, dict):
                v = json.dumps(v)[:120]
            rows.append(
                {
                    "property": prop,
                    "quantity": key,
                    "value": _fmt(v),
                    "holds": str(report[prop]["holds"]),
                }
            )
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    lines = ["| property | quantity | value | holds |", "|---|---|---|---|"]
    lines += [f"| {r['property']} | {r['quantity']} | {r['value']} | {r['holds']} |" for r in rows]
    return "\n".join(lines) + "\n"
