"""Run readers (`nudgekit.eval.runs`) and the notebooks' analyses (`hinting`, `anatomy`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from nudgekit.errors import NudgekitError
from nudgekit.eval import anatomy, hinting
from nudgekit.eval.runs import find_runs, pass_curve, read_table, repo_root, runs_from_env, sweep_of
from nudgekit.tracking import Tracker


def make_run(path: Path, summary: dict, mtime: float | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps(summary))
    if mtime is not None:
        os.utime(path / "summary.json", (mtime, mtime))
    return path


def test_pass_curve_reads_the_eval_keys_in_k_order():
    summary = {"eval/pass@8": 0.5, "eval/pass@1": 0.1, "eval/pass@2": 0.2, "eval/mean_reward": 1}
    assert pass_curve(summary) == {1: 0.1, 2: 0.2, 8: 0.5}
    assert list(pass_curve(summary)) == [1, 2, 8]


def test_runs_from_env_prefers_the_variable_else_the_newest_runs(tmp_path, monkeypatch):
    now = time.time()
    old = make_run(tmp_path / "outputs/t/runs/a", {}, now - 100)
    new = make_run(tmp_path / "outputs/t/runs/b", {}, now)
    make_run(tmp_path / "outputs/other/runs/c", {}, now + 100)
    monkeypatch.delenv("NK_TEST_RUNS", raising=False)
    assert runs_from_env("NK_TEST_RUNS", tmp_path / "outputs", "summary.json", task="t") == [new]
    assert runs_from_env(
        "NK_TEST_RUNS", tmp_path / "outputs", "summary.json", task="t", latest=2
    ) == [old, new]
    monkeypatch.setenv("NK_TEST_RUNS", f"{old},{tmp_path / 'outputs/other'}")
    assert runs_from_env("NK_TEST_RUNS", tmp_path / "nowhere", "summary.json") == [
        old,
        tmp_path / "outputs/other/runs/c",
    ]
    monkeypatch.setenv("NK_TEST_RUNS", "outputs/t/runs/b")  # relative: from the repo (root/..)
    assert runs_from_env("NK_TEST_RUNS", tmp_path / "outputs", "summary.json") == [new]
    monkeypatch.setenv("NK_TEST_RUNS", str(tmp_path / "empty"))
    with pytest.raises(NudgekitError, match="no run with summary.json"):
        runs_from_env("NK_TEST_RUNS", tmp_path / "outputs", "summary.json")


def test_sweep_of_finds_the_sibling_jobs_of_a_multirun(tmp_path):
    jobs = [make_run(tmp_path / "multiruns/ts" / str(i), {}) for i in (0, 1, 10, 2)]
    assert sweep_of(jobs[0], "summary.json") == sorted(jobs, key=lambda d: int(d.name))
    single = make_run(tmp_path / "runs/ts", {})
    assert sweep_of(single, "summary.json") == [single]
    assert find_runs(tmp_path / "missing", "summary.json") == []


def test_repo_root_climbs_to_run_py():
    here = Path(__file__).resolve().parent
    assert (repo_root(here) / "run.py").exists() and repo_root(here) == here.parent


def test_read_table_reads_what_the_tracker_wrote(tmp_path):
    tracker = Tracker(run_dir=str(tmp_path), config={}, mode="disabled")
    tracker.log_table("nurl/hint_decisions", [{"status": "hinted", "post_pass_rate": 0.5}], step=3)
    tracker.finish()
    assert read_table(tmp_path, "nurl/hint_decisions") == [
        {"step": 3, "status": "hinted", "post_pass_rate": 0.5}
    ]
    assert read_table(tmp_path, "never/logged") == []


DECISIONS = [
    {"step": 1, "status": "hinted", "pre_pass_rate": 0.0, "post_pass_rate": 0.25},
    {"step": 1, "status": "no_hint", "pre_pass_rate": 0.0, "post_pass_rate": 0.0},
    {"step": 2, "status": "hinted", "pre_pass_rate": 0.0, "post_pass_rate": 0.0},
    {"step": 2, "status": "hinted", "pre_pass_rate": 0.0, "post_pass_rate": 1.0},
    {"step": 2, "status": "too_long", "pre_pass_rate": 0.0, "post_pass_rate": 0.0},
]


def test_decisions_by_step_counts_statuses_and_averages_hinted_groups():
    rows = hinting.decisions_by_step(DECISIONS)
    assert rows[0] == {
        "step": 1,
        "gated": 2,
        "hinted": 1,
        "no_hint": 1,
        "too_long": 0,
        "pre_pass_rate": 0.0,
        "post_pass_rate": 0.25,
    }
    assert rows[1]["hinted"] == 2 and rows[1]["too_long"] == 1
    assert rows[1]["post_pass_rate"] == pytest.approx(0.5)
    assert (
        hinting.decisions_by_step(
            [{"step": 4, "status": "no_hint", "pre_pass_rate": 0.0, "post_pass_rate": 0.0}]
        )[0]["post_pass_rate"]
        is None
    )


def test_hinted_outcomes_split_signal_from_still_zero_and_solved():
    out = hinting.hinted_outcomes(DECISIONS)
    assert out["hinted_groups"] == 3
    assert out["signal_frac"] == pytest.approx(1 / 3)
    assert out["still_zero_frac"] == pytest.approx(1 / 3)
    assert out["all_solved_frac"] == pytest.approx(1 / 3)
    assert out["mean_post_pass_rate"] == pytest.approx(1.25 / 3)
    assert hinting.hinted_outcomes([]) == {"hinted_groups": 0.0}


def test_signal_by_step_keeps_training_steps_only():
    metrics = [
        {"step": 0, "val/pass@1": 0.1},
        {
            "step": 1,
            "nurl/groups_hinted": 2.0,
            "nurl/frac_reward_zero_std_before": 0.5,
            "nurl/frac_reward_zero_std_after": 0.25,
        },
    ]
    rows = hinting.signal_by_step(metrics)
    assert len(rows) == 1 and rows[0]["step"] == 1 and rows[0]["groups_hinted"] == 2.0
    assert rows[0]["frac_reward_zero_std_after"] == 0.25 and rows[0]["hinted_pass_rate"] is None


@pytest.mark.parametrize(
    "word,kind",
    [
        ("7", "number"),
        ("-12,", "number"),
        ("3.5", "number"),
        ("\\boxed{42}", "number"),
        ("tpl", "operator"),
        ("+", "operator"),
        ("=", "operator"),
        ("minus", "operator"),
        ("Answer:", "format"),
        ("do", "format"),
        ("The", "format"),
        ("Therefore,", "format"),
        ("apples", "other"),
        ("x7y", "other"),
    ],
)
def test_word_type(word, kind):
    assert anatomy.word_type(word) == kind


def test_the_tiny_operations_match_the_zoo():
    from nudgekit.zoo.tasks import OPS

    assert set(OPS) == anatomy.TINY_OPS


def test_words_take_the_author_of_their_first_character():
    text = "do tpl\n4 tpl 2\nAnswer: 2"
    ws = anatomy.words(text, [[0, 3, "nudge"], [3, 15, "base"], [15, len(text), "nudge"]])
    assert [w["word"] for w in ws] == ["do", "tpl", "4", "tpl", "2", "Answer:", "2"]
    assert [w["source"] for w in ws] == ["nudge", "base", "base", "base", "base", "nudge", "nudge"]
    assert [w["position"] for w in ws] == [i / 7 for i in range(7)]


def test_type_and_position_tables_from_both_record_layouts():
    nudging_row = {"output": "do 3", "spans": [[0, 2, "nudge"], [2, 4, "base"]]}
    eval_row = {"completions": ["5 inc", "x"], "spans": [[[0, 5, "base"]], [[0, 1, "nudge"]]]}
    ws = anatomy.all_words([nudging_row, eval_row])
    assert len(ws) == 5
    types = {r["type"]: r for r in anatomy.by_type(ws)}
    assert types["format"]["nudged"] == 1 and types["number"]["words"] == 2
    assert types["other"]["nudged_share"] == 1.0
    assert sum(r["share_of_nudged"] for r in types.values()) == pytest.approx(1.0)
    bins = anatomy.by_position(ws, bins=2)
    assert [b["words"] for b in bins] == [3, 2] and [b["nudged"] for b in bins] == [2, 0]
    assert anatomy.top_nudged(ws, 1) == [("do", 1)]


def test_gamma_table_sorts_and_reads_both_pipelines():
    nudging = (
        {"decoder": {"gamma": 0.7}},
        {"nudging/accuracy": 0.4, "nudging/nudge_token_share": 0.3},
    )
    evals = (
        {"pipeline": {"decoder": {"gamma": 0.2}}},
        {"eval/pass@1": 0.1, "nudging/nudge_token_share": 0.05},
    )
    table = anatomy.gamma_table([nudging, evals])
    assert [r["gamma"] for r in table] == [0.2, 0.7]
    assert table[0]["accuracy"] == 0.1 and table[1]["nudge_token_share"] == 0.3
