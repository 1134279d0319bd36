"""Compare lm-eval's logged samples from the nudging server with nudgekit's in-process run.

    python experiments/nudging/lm_eval/compare.py LM_EVAL_OUTPUT_DIR RUN_DIR

`RUN_DIR` is an in-process run on the same problems and budget: an eval run
(`samples.jsonl`, first completion of each problem) or a `NudgingPipeline` run (`nudging.jsonl`,
`output`). Problems are matched by question text. Prints the per-problem text equality count,
both scores (lm-eval's `acc` and nudgekit's verifier on the in-process texts) and exits 1 when
any text or the score differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def lm_eval_rows(out: Path) -> tuple[dict[str, str], float]:
    (samples,) = out.rglob("samples_gsm8k_nudgekit_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    (results,) = out.rglob("results_*.json")
    acc = json.loads(results.read_text())["results"]["gsm8k_nudgekit"]["acc,none"]
    return {r["doc"]["question"]: r["resps"][0][0] for r in rows}, acc


def in_process_rows(run_dir: Path) -> tuple[dict[str, str], float]:
    if (run_dir / "nudging.jsonl").exists():
        rows = [json.loads(x) for x in (run_dir / "nudging.jsonl").read_text().splitlines()]
        texts = {r["question"]: r["output"] for r in rows}
        return texts, sum(r["correct"] for r in rows) / len(rows)
    rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    questions = _questions(run_dir, [r["id"] for r in rows])
    texts = {questions[r["id"]]: r["completions"][0] for r in rows}
    return texts, sum(r["rewards"][0] for r in rows) / len(rows)


def _questions(run_dir: Path, ids: list[str]) -> dict[str, str]:
    """The GSM8K questions of an eval run's ids (eval samples keep ids, not questions)."""
    from nudgekit.data import load_benchmark

    by_id = {p.id: p.question for p in load_benchmark("gsm8k")}
    return {i: by_id[i] for i in ids}


def main() -> None:
    lm_dir, run_dir = (Path(a) for a in sys.argv[1:3])
    served, acc = lm_eval_rows(lm_dir)
    local, score = in_process_rows(run_dir)
    common = [q for q in served if q in local]
    equal = sum(served[q] == local[q] for q in common)
    print(f"problems: lm-eval {len(served)}, in-process {len(local)}, common {len(common)}")
    print(f"per-problem text equality: {equal}/{len(common)}")
    print(f"score: lm-eval acc {acc:.4f}, in-process {score:.4f}")
    ok = equal == len(common) == len(served) == len(local) and abs(acc - score) < 1e-12
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
