"""`NudgingPipeline` end to end through `run.py` (tiny models, real files), the real-pair configs
failing fast without a GPU or the hub, and the gamma sweep."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers.config import compose_cfg
from helpers.nudging import model_dirs
from hydra.utils import instantiate

from nudgekit.errors import NudgekitError
from nudgekit.models import ChatPrompt, ModelSpec
from nudgekit.nudging import CachedNudgingDecoder, NudgingPipeline
from nudgekit.rewards import load_verifier
from nudgekit.runtime import find_user_error
from nudgekit.zoo import tiny_problems

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NUDGEKIT_DATA", ROOT.parent / "shared" / "data"))


pytestmark = pytest.mark.usefixtures("one_thread")


def test_nudging_tiny_end_to_end(tmp_path, tmp_path_factory, monkeypatch):
    """`experiment=nudging_tiny debug=tiny` through the CLI's `run(cfg)`, on the test pair."""
    from nudgekit.cli import run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dirs = model_dirs(tmp_path_factory)
    cfg = compose_cfg(
        [
            "experiment=nudging_tiny",
            f"model.name_or_path={dirs['base']}",
            f"pipeline.nudging.name_or_path={dirs['small']}",
            f"pipeline.aligned_large.name_or_path={dirs['large']}",
            "budget.problems=5",
            "budget.max_new_tokens=20",
            "decoder.chunk_tokens=8",
        ],
        output_dir=tmp_path,
    )
    accuracy = run(cfg)
    assert accuracy is not None and 0.0 <= accuracy <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "nudging.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for r in rows:
        for key in (
            "id",
            "prompt_base",
            "prompt_nudging",
            "output",
            "spans",
            "nudged_spans",
            "nudge_tokens",
            "base_tokens",
            "correct",
            "lenient_correct",
        ):
            assert key in r, key
        # nudging_tiny gives the base its scraped-chat prompt
        assert r["prompt_base"].startswith("<|user|>") and "<|user|>" in r["prompt_nudging"]
        assert "".join(r["output"][a:b] for a, b, _ in r["spans"]) == r["output"]
        assert r["nudged_spans"] == [r["output"][a:b] for a, b, s in r["spans"] if s == "nudge"]
        assert set(r["baselines"]) == {
            "base_only",
            "base_only_stop",
            "nudger_only",
            "aligned_large",
        }
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "nudging/accuracy",
        "nudging/nudge_token_share",
        "nudging/intervention_rate",
        "base_only/accuracy",
        "base_only_stop/lenient_accuracy",
        "aligned_large/accuracy",
    ):
        assert 0.0 <= summary[key] <= (100.0 if "rate" in key else 1.0), key
    page = (tmp_path / "nudging.html").read_text()
    assert page.count('<div class="item">') == 5 and "nudging/accuracy" in page


def test_pipeline_in_process_with_the_chunked_decoder(tmp_path, tmp_path_factory):
    dirs = model_dirs(tmp_path_factory)
    base, small = ModelSpec(str(dirs["base"])), ModelSpec(str(dirs["small"]))
    pipe = NudgingPipeline(
        base=base,
        nudging=small,
        problems=tiny_problems("test", n=3),
        verifier=load_verifier("tiny"),
        base_prompt=ChatPrompt(base, "tiny", chat=False),
        nudging_prompt=ChatPrompt(small, "tiny"),
        baselines=[],
        decoder=lambda **kw: __import__("nudgekit.nudging", fromlist=["x"]).ChunkedNudgingDecoder(
            gamma=0.3, chunk_tokens=8, **kw
        ),
        max_new_tokens=16,
    )
    metrics = pipe.run(None, tmp_path)
    assert set(metrics) >= {"nudging/accuracy", "nudging/nudge_token_share", "nudging/seconds"}
    assert not any(k.startswith("base_only") for k in metrics)
    assert (tmp_path / "results.md").exists()


def test_proxy_tuning_baseline_needs_a_shared_vocabulary(tmp_path, tmp_path_factory):
    dirs = model_dirs(tmp_path_factory)
    base, small = ModelSpec(str(dirs["base"])), ModelSpec(str(dirs["small"]))
    pipe = NudgingPipeline(
        base=base,
        nudging=small,
        antiexpert=ModelSpec(str(dirs["large"])),
        problems=tiny_problems("test", n=2),
        verifier=load_verifier("tiny"),
        base_prompt=ChatPrompt(base, "tiny", chat=False),
        nudging_prompt=ChatPrompt(small, "tiny"),
        decoder=lambda **kw: CachedNudgingDecoder(chunk_tokens=8, **kw),
        baselines=["proxy_tuning"],
        max_new_tokens=8,
    )
    with pytest.raises(NudgekitError, match="tokenizers differ"):
        pipe.run(None, tmp_path)


def test_unknown_baseline_is_a_one_line_error(tmp_path_factory):
    dirs = model_dirs(tmp_path_factory)
    spec = ModelSpec(str(dirs["base"]))
    with pytest.raises(NudgekitError, match="unknown baselines"):
        NudgingPipeline(
            base=spec,
            nudging=spec,
            problems=tiny_problems("test", n=1),
            verifier=load_verifier("tiny"),
            base_prompt=str,
            nudging_prompt=str,
            decoder=CachedNudgingDecoder,
            baselines=["base_only", "ensemble"],
        )


@pytest.mark.skipif(not (DATA / "gsm8k" / "test.jsonl").exists(), reason=f"no data at {DATA}")
@pytest.mark.parametrize("experiment", ["nudging_olmo", "nudging_gemma_llama"])
def test_real_pairs_fail_fast_without_gpu_or_hub(experiment, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for overrides, needle in (
        ([], "CUDA is not available"),
        (
            ["model.device=cpu", "pipeline.nudging.device=cpu", "pipeline.aligned_large.device=cpu"]
            + (["pipeline.antiexpert.device=cpu"] if experiment == "nudging_olmo" else []),
            "not reachable on the hub",
        ),
    ):
        cfg = compose_cfg(
            [f"experiment={experiment}", "budget.problems=2", *overrides], tiny=False, hydra=True
        )
        start = time.perf_counter()
        with pytest.raises(Exception) as info:
            instantiate(cfg.pipeline)
        error = find_user_error(info.value)
        assert error is not None and needle in str(error), info.value
        assert "\n" not in str(error)
        assert time.perf_counter() - start < 30


def test_gamma_sweep_covers_point_one_to_point_nine():
    cfg = compose_cfg(["experiment=nudging_tiny", "sweep=gamma"], tiny=False, hydra=True)
    values = [float(v) for v in str(cfg.hydra.sweeper.params["decoder.gamma"]).split(",")]
    assert values == [round(0.1 * i, 1) for i in range(1, 10)]
    assert cfg.optimized_metric == "nudging/accuracy"
    assert cfg.pipeline.decoder._target_ == "nudgekit.nudging.CachedNudgingDecoder"
