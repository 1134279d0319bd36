"""lm-evaluation-harness as the nudging server's client (slow): `lm_eval --model
local-completions` on the local GSM8K task (experiments/nudging/lm_eval) writes, problem by
problem, the text the in-process decoder writes for the same question, and its score is the
in-process score with nudgekit's gsm8k verifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.nudging import model_dirs
from test_serve import MODEL, Served

from nudgekit.data import load_benchmark
from nudgekit.rewards import load_verifier
from nudgekit.serve import Limits

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NUDGEKIT_DATA", ROOT.parent / "shared" / "data"))
N, MAX_TOKENS = 6, 32
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def lm_eval(url: str, out: Path, limit: int, max_tokens: int) -> tuple[list[dict], float]:
    """Run lm_eval against `url`: its logged samples in doc order, and its acc."""
    args = [
        sys.executable, "-m", "lm_eval", "--model", "local-completions",
        "--model_args", f"model={MODEL},base_url={url}/v1/completions,tokenizer_backend=none,"
        "num_concurrent=4,max_retries=1",
        "--include_path", "experiments/nudging/lm_eval", "--tasks", "gsm8k_nudgekit",
        "--limit", str(limit), "--gen_kwargs", f"max_gen_toks={max_tokens}",
        "--log_samples", "--output_path", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (samples,) = out.rglob("samples_gsm8k_nudgekit_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    (results,) = out.rglob("results_*.json")
    acc = json.loads(results.read_text())["results"]["gsm8k_nudgekit"]["acc,none"]
    return sorted(rows, key=lambda r: r["doc_id"]), acc


def test_lm_eval_scores_the_server_like_the_in_process_eval(tmp_path_factory, tmp_path):
    pytest.importorskip("lm_eval")
    pytest.importorskip("tenacity")  # lm_eval[api]: pip install -e ".[eval]"
    if not (DATA / "gsm8k" / "test.jsonl").exists():
        pytest.skip(f"no GSM8K file under {DATA}")
    limits = Limits(max_prompt_chars=2000, max_prompt_tokens=1024, max_tokens=MAX_TOKENS)
    server = Served(model_dirs(tmp_path_factory), tmp_path / "run", limits=limits)
    try:
        rows, acc = lm_eval(server.url, tmp_path / "lm_eval", N, MAX_TOKENS)
        problems = load_benchmark("gsm8k", limit=N)
        ref = server.reference([p.question for p in problems], max_tokens=MAX_TOKENS)
    finally:
        server.stop()
    assert [r["doc"]["question"] for r in rows] == [p.question for p in problems]
    assert [r["resps"][0][0] for r in rows] == [o.text for o in ref]
    verify = load_verifier("gsm8k")
    assert acc == sum(verify(o.text, p.answer) for o, p in zip(ref, problems)) / N
