"""The nudging benchmarks' measuring helpers: alternation order and ratio arithmetic.

The benchmarks' numbers are only as good as these two functions: runs must alternate
(A B A B ...) so a slow spell of a shared machine hits every run alike, and ratios must be taken
per repetition (then the median), by time or by throughput when runs write different amounts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "bench"))

import nudging_scaling  # noqa: E402
import nudging_speed  # noqa: E402


def test_measure_alternates_runs_and_keeps_last_outputs():
    calls: list[str] = []

    def run(name: str):
        def fn() -> list[str]:
            calls.append(name)
            return [f"{name}{calls.count(name)}"]

        return fn

    seconds, outputs = nudging_speed.measure({"a": run("a"), "b": run("b")}, reps=3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert [len(v) for v in seconds.values()] == [3, 3]
    assert outputs == {"a": ["a3"], "b": ["b3"]}


def test_ratio_is_the_median_of_per_repetition_ratios():
    # per rep: 2, 20, 2 -> 2 (the ratio of the medians would be 6 / 2 = 3)
    seconds = {"a": [2.0, 40.0, 6.0], "b": [1.0, 2.0, 3.0]}
    assert nudging_speed.ratio(seconds, "a", "b") == pytest.approx(2.0)
    # throughput, a writes 30 tokens and b 10: (30 / ta) / (10 / tb) = 1.5, 0.15, 1.5 per rep
    work = {"a": 30, "b": 10}
    assert nudging_speed.ratio(seconds, "a", "b", work) == pytest.approx(1.5)


def test_scaling_defaults_cover_32_to_256_tokens():
    args = nudging_scaling.parse_args([])
    assert args.lengths == [32, 64, 128, 256] and args.batch == 16 and args.reps >= 2
    assert nudging_speed.parse_args(["--reps", "3"]).reps == 3


def test_speed_ratios_cover_every_batch_size():
    pairs = nudging_speed.ratio_pairs([1, 16, 64])
    ref = nudging_speed.REF
    assert pairs["reference time / cached b64 time"] == (ref, "cached, batch 64", False)
    assert pairs["cached b64 / cached b1 throughput"] == (
        "cached, batch 64",
        "cached, batch 1",
        True,
    )
    assert pairs["cached b1 / base-only generate b1 throughput"][1] == (
        "base-only model.generate, batch 1"
    )
    assert nudging_speed.parse_args([]).batches == [1, 16]


def test_decoders_only_runs_report_no_base_only_ratio():
    pairs = nudging_speed.ratio_pairs([16, 64], base_only=False)
    assert set(pairs) == {
        "reference time / cached b16 time",
        "reference time / cached b64 time",
        "cached b64 / cached b16 throughput",
    }
    assert nudging_speed.parse_args(["--no-base-only"]).no_base_only


def test_scaling_plot_draws_the_panels_it_has_data_for(tmp_path):
    import plot_scaling
    from PIL import Image

    rows = lambda key, xs: [{key: x, "step_s": 2.0 * x, "generate_s": x, "update_s": x}  # noqa: E731
                            for x in xs]  # fmt: skip
    grpo = {"G": {"rows": rows("G", [2, 4])}, "length": {"rows": rows("max_new_tokens", [32, 64])}}
    nudging = {"n": 4, "batch": 4, "by_length": {
        str(n): {"median_seconds": {"nudging (cached)": n / 8, "base-only (hf engine)": n / 32}}
        for n in (32, 64)}}  # fmt: skip
    assert plot_scaling.plot(None, None, tmp_path / "none.png") is None
    both = Image.open(plot_scaling.plot(grpo, nudging, tmp_path / "all.png"))
    one = Image.open(plot_scaling.plot(None, nudging, tmp_path / "one.png"))
    assert both.width > 2.5 * one.width  # three panels against one
