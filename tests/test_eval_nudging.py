"""The eval pipeline with its samples written by a nudging decoder: `experiment=eval_nudging_tiny
debug=tiny` through `nudgekit.cli.run` (fast) and `run.py` (slow), and in process (sampling,
n > 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.config import compose_cfg
from helpers.nudging import model_dirs

from nudgekit.errors import NudgekitError
from nudgekit.eval import EvalPipeline
from nudgekit.eval.nudged import repeat
from nudgekit.models import ChatPrompt, ModelSpec
from nudgekit.nudging import CachedNudgingDecoder
from nudgekit.rewards import load_verifier
from nudgekit.zoo import tiny_problems

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def run_experiment(how: str, args: list[str], run_dir: Path) -> None:
    """`run.py` in a subprocess, or the same config composed and run by `nudgekit.cli.run`."""
    if how == "run.py":
        env = {**os.environ, "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
        cmd = [sys.executable, "run.py", *args, f"hydra.run.dir={run_dir}"]
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return
    from nudgekit.cli import run

    run(compose_cfg(args, tiny=False, output_dir=run_dir))


def test_repeat_puts_the_samples_of_one_item_together():
    assert repeat(["a", "b"], 3) == ["a", "a", "a", "b", "b", "b"]


@pytest.mark.parametrize("how", ["cli.run", pytest.param("run.py", marks=pytest.mark.slow)])
def test_eval_nudging_tiny(how, tmp_path, tmp_path_factory):
    """Greedy nudged eval of the experiment on the word-writing test pair (the @test zoo pair's
    nudger writes only whitespace, so every answer would be empty): the samples are exactly what
    the decoder writes for the same prompts, and the rewards are the verifier applied to them."""
    dirs = model_dirs(tmp_path_factory)
    run = tmp_path / "run"
    run_experiment(
        how,
        [
            "experiment=eval_nudging_tiny",
            "debug=tiny",
            f"model.name_or_path={dirs['base']}",
            f"pipeline.nudging.name_or_path={dirs['small']}",
            "budget.max_new_tokens=20",
            "decoder.chunk_tokens=8",
            "decoder.gamma=0.4",
        ],
        run,
    )
    for name in (
        "samples.jsonl",
        "summary.json",
        "results.md",
        "pass_at_k.png",
        "config.yaml",
        "metrics.jsonl",
    ):
        assert (run / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    problems = tiny_problems("test", n=4, seed=0)
    assert [r["id"] for r in rows] == [p.id for p in problems]

    base, small = ModelSpec(str(dirs["base"])), ModelSpec(str(dirs["small"]))
    base_prompt, nudging_prompt = ChatPrompt(base, "tiny", chat=False), ChatPrompt(small, "tiny")
    from nudgekit.engines.hf import HFEngine

    decoder = CachedNudgingDecoder(
        HFEngine(base), HFEngine(small), gamma=0.4, chunk_tokens=8, max_new_tokens=20, seed=0
    )
    expected = decoder.decode(
        [base_prompt(p) for p in problems], [nudging_prompt(p) for p in problems]
    )
    verify = load_verifier("tiny")
    for row, problem, want in zip(rows, problems, expected):
        assert row["prompt"] == base_prompt(problem)
        assert row["completions"] == [want.text] and row["n"] == 1
        assert row["rewards"] == [float(verify(want.text, problem.answer))]
        assert row["finish_reasons"] == [want.stop_reason]
        assert row["spans"] == [[[s.start, s.end, s.source] for s in want.spans]]
        assert row["nudge_tokens"] == [want.nudge_tokens]
    assert any(t for r in rows for t in r["nudge_tokens"]), "no answer was nudged"
    summary = json.loads((run / "summary.json").read_text())
    mean = sum(r["rewards"][0] for r in rows) / len(rows)
    assert summary["eval/pass@1"] == pytest.approx(mean)
    assert 0.0 < summary["nudging/nudge_token_share"] <= 1.0
    assert "eval/pass@1" in (run / "results.md").read_text()


def nudged_eval(dirs: dict, **kwargs) -> EvalPipeline:
    from nudgekit.engines.hf import HFEngine

    base, small = ModelSpec(str(dirs["base"])), ModelSpec(str(dirs["small"]))
    return EvalPipeline(
        engine=HFEngine(base),
        problems=tiny_problems("test", n=2),
        verifier=load_verifier("tiny"),
        prompt=ChatPrompt(base, "tiny", chat=False),
        decoder=lambda **kw: CachedNudgingDecoder(gamma=0.4, chunk_tokens=8, **kw),
        nudging=small,
        nudging_prompt=ChatPrompt(small, "tiny"),
        max_new_tokens=12,
        **kwargs,
    )


def test_sampled_nudging_draws_n_answers_per_problem(tmp_path, tmp_path_factory):
    pipe = nudged_eval(model_dirs(tmp_path_factory), n=3, k=[1, 3], temperature=1.0, seed=5)
    metrics = pipe.run(None, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["n"] for r in rows] == [3, 3] and all(len(r["spans"]) == 3 for r in rows)
    assert any(len(set(r["completions"])) > 1 for r in rows), "sampling gave identical answers"
    for r in rows:
        for text, spans in zip(r["completions"], r["spans"]):
            assert "".join(text[a:b] for a, b, _ in spans) == text
    assert {"eval/pass@1", "eval/pass@3", "nudging/nudge_token_share"} <= set(metrics)


def test_greedy_nudging_with_n_above_one_is_refused(tmp_path_factory):
    with pytest.raises(NudgekitError, match="greedy"):
        nudged_eval(model_dirs(tmp_path_factory), n=2, k=[1], temperature=0.0)


def test_a_decoder_without_a_nudging_model_is_refused(tmp_path_factory):
    dirs = model_dirs(tmp_path_factory)
    spec = ModelSpec(str(dirs["base"]))
    with pytest.raises(NudgekitError, match="pipeline.nudging"):
        EvalPipeline(
            engine=None,
            problems=tiny_problems("test", n=1),
            verifier=load_verifier("tiny"),
            prompt=ChatPrompt(spec, "tiny"),
            decoder=CachedNudgingDecoder,
            n=1,
        )


@pytest.mark.slow
def test_eval_nudging_tiny_on_the_test_zoo(tmp_path):
    """The experiment as documented, on the zoo's `@test` models (built on first use)."""
    run_experiment("run.py", ["experiment=eval_nudging_tiny", "debug=tiny"], tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval/problems"] == 4 and "nudging/nudge_token_share" in summary
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    verify = load_verifier("tiny")
    assert all(r["rewards"] == [verify(r["completions"][0], r["answer"])] for r in rows)
