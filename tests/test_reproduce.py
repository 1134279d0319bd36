"""`make reproduce`: stage keys, the DAG scheduler (concurrency, caching, failure, resume) on
trivial stages, the real stage list of both profiles, the results writer, and (slow) the tiny
profile end to end, twice."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nudgekit.reproduce import Scheduler, Stage, build_stages, stage_keys
from nudgekit.reproduce.__main__ import runpy_command
from nudgekit.reproduce.cache import DONE_FILE, order
from nudgekit.reproduce.scheduler import critical_path
from nudgekit.reproduce.stages import PROFILES, RUN_REF

ROOT = Path(__file__).resolve().parents[1]

# a trivial stage: records its start/end times, sleeps, fails on "fail"
SCRIPT = """
import json, sys, time, pathlib
d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True)
t0 = time.time(); time.sleep(float(sys.argv[2]))
(d / "times.json").write_text(json.dumps([t0, time.time()]))
sys.exit(3 if sys.argv[3] == "fail" else 0)
"""


def trivial(stage: Stage, run_dir: Path, dirs: dict[str, Path]) -> list[str]:
    sleep, mode = (stage.args + ("0.2", "ok"))[:2]
    return [sys.executable, "-c", SCRIPT, str(run_dir), sleep, mode]


def diamond(fail: str = "") -> list[Stage]:
    mk = lambda n, deps=(), s="0.5": Stage(n, (s, "fail" if n == fail else "ok"), deps)  # noqa: E731
    return [mk("a"), mk("b", ("a",)), mk("c", ("a",)), mk("d", ("b", "c")), mk("e"), mk("f")]


def run(stages, root, slots=2):
    lines: list[str] = []
    res = Scheduler(stages, root, trivial, slots=slots, say=lines.append, poll_s=0.02).run()
    return res, lines


def test_keys_change_with_args_deps_and_version():
    st = diamond()
    k = stage_keys(st)
    assert k == stage_keys(list(reversed(st)))  # order-independent
    changed = [Stage("a", ("0.4", "ok")), *st[1:]]
    k2 = stage_keys(changed)
    assert k2["a"] != k["a"] and k2["d"] != k["d"]  # propagates to dependants
    assert k2["e"] == k["e"] and k2["f"] == k["f"]  # independent stages keep theirs
    assert stage_keys(st, version="other")["e"] != k["e"]


def test_keys_cover_the_composed_config_and_the_code(tmp_path):
    """A changed config value (in a conf file, not on the command line) or a changed source
    file changes the key, so an old result is not reused; an unrelated stage keeps its key."""
    import shutil

    from nudgekit.reproduce.fingerprint import Fingerprint, code_hash

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    (tmp_path / "nudgekit").mkdir()
    (tmp_path / "nudgekit" / "a.py").write_text("X = 1\n")
    (tmp_path / "run.py").write_text("print()\n")
    train = Stage("nurl_tiny_s0", ("experiment=nurl_tiny", "seed=0"))
    evals = Stage(
        "eval_nurl_tiny_s0",
        ("experiment=nurl_tiny_eval", f"model.name_or_path={RUN_REF % 'nurl_tiny_s0'}/policy"),
        ("nurl_tiny_s0",),
    )
    sweep = Stage("ablation", ("experiment=nurl_tiny", "sweep=nurl_gate"), multirun=True)
    stages = [train, evals, sweep]
    before = stage_keys(stages, fingerprint=Fingerprint(tmp_path))
    assert before != stage_keys(stages)  # the fingerprint enters the key
    assert Fingerprint(tmp_path).config(train) == Fingerprint(tmp_path).config(train)

    conf = tmp_path / "conf" / "experiment" / "nurl_tiny.yaml"
    conf.write_text(conf.read_text().replace("lr: 2.0e-4", "lr: 3.0e-4"))
    after = stage_keys(stages, fingerprint=Fingerprint(tmp_path))
    assert after["nurl_tiny_s0"] != before["nurl_tiny_s0"]
    assert after["eval_nurl_tiny_s0"] != before["eval_nurl_tiny_s0"]  # through the dependency
    assert after["ablation"] != before["ablation"]

    swept = Fingerprint(tmp_path).config(sweep)
    sweep_file = tmp_path / "conf" / "sweep" / "nurl_gate.yaml"
    sweep_file.write_text(sweep_file.read_text().replace("zero_pass,always", "zero_pass"))
    assert Fingerprint(tmp_path).config(sweep) != swept  # the sweep's parameters count too

    code = code_hash(tmp_path)
    assert code == Fingerprint(tmp_path).code
    (tmp_path / "nudgekit" / "reproduce").mkdir()
    (tmp_path / "nudgekit" / "reproduce" / "writer.py").write_text("Y = 1\n")
    assert code_hash(tmp_path) == code  # the runner and its reports are not what a stage runs
    (tmp_path / "nudgekit" / "a.py").write_text("X = 2\n")
    new_code = code_hash(tmp_path)
    assert new_code != code
    old_keys = stage_keys(stages, fingerprint=lambda s: {"config": "c", "code": code})
    new_keys = stage_keys(stages, fingerprint=lambda s: {"config": "c", "code": new_code})
    assert all(new_keys[k] != old_keys[k] for k in old_keys)


def test_order_rejects_cycles_and_unknown_deps():
    with pytest.raises(ValueError, match="cycle"):
        order([Stage("x", (), ("y",)), Stage("y", (), ("x",))])
    with pytest.raises(ValueError, match="unknown"):
        order([Stage("x", (), ("nope",))])
    assert [s.name for s in order([Stage("b", (), ("a",)), Stage("a", ())])] == ["a", "b"]


def test_scheduler_order_concurrency_and_cache(tmp_path):
    st = diamond()
    res, _ = run(st, tmp_path)
    assert {r.status for r in res.values()} == {"done"}
    times = {n: json.loads((r.run_dir / "times.json").read_text()) for n, r in res.items()}
    for s in st:  # every dependency ended before its dependant started
        assert all(times[d][1] <= times[s.name][0] for d in s.deps)
    events = sorted([(t0, 1) for t0, _ in times.values()] + [(t1, -1) for _, t1 in times.values()])
    level, peak = 0, 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak == 2  # two at a time, never three
    assert all((r.run_dir / DONE_FILE).is_file() and r.log.is_file() for r in res.values())
    t = time.monotonic()
    res2, lines = run(st, tmp_path)
    assert {r.status for r in res2.values()} == {"cached"} and time.monotonic() - t < 2
    assert sum(ln.startswith("[cached]") for ln in lines) == len(st)


def test_failure_stops_dependants_only_and_resume_reruns_unfinished(tmp_path):
    res, lines = run(diamond(fail="b"), tmp_path)
    status = {n: r.status for n, r in res.items()}
    assert status == {
        "a": "done",
        "b": "failed",
        "c": "done",
        "d": "skipped",
        "e": "done",
        "f": "done",
    }
    assert res["b"].returncode == 3 and any(str(res["b"].log) in ln for ln in lines)
    # fixing b changes b's key and d's; a, c, e, f come from the cache
    res2, _ = run(diamond(), tmp_path)
    assert {n: r.status for n, r in res2.items()} == {
        "a": "cached",
        "b": "done",
        "c": "cached",
        "d": "done",
        "e": "cached",
        "f": "cached",
    }
    # a stage killed midway leaves no DONE marker: it (and only it) runs again
    (res2["f"].run_dir / DONE_FILE).unlink()
    res3, _ = run(diamond(), tmp_path)
    assert [n for n, r in res3.items() if r.status == "done"] == ["f"]


def test_two_slot_stage_runs_alone(tmp_path):
    st = [
        Stage("big", ("0.3", "ok"), slots=2),
        Stage("x", ("0.3", "ok")),
        Stage("y", ("0.3", "ok")),
    ]
    res, _ = run(st, tmp_path)
    t = {n: json.loads((r.run_dir / "times.json").read_text()) for n, r in res.items()}
    big = t["big"]
    assert all(v[1] <= big[0] or v[0] >= big[1] for n, v in t.items() if n != "big")


def test_critical_path_prefers_long_chains():
    st = [Stage("a", (), est_s=10), Stage("b", (), ("a",), est_s=100), Stage("c", (), est_s=50)]
    p = critical_path(st)
    assert p == {"a": 110, "b": 100, "c": 50}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_stage_list(profile):
    st = build_stages(profile)
    names = {s.name for s in st}
    assert [s.name for s in order(st)][0] == "zoo_build"
    p = PROFILES[profile]
    for s in st:
        assert all(d in names for d in s.deps)
        assert s.name == "zoo_build" or "zoo_build" in s.deps or s.name.startswith("eval_")
        assert ("debug=tiny" in s.args) == (profile == "tiny")
    evals = [s for s in st if s.name.startswith("eval_") and s.name != "eval_base"]
    has_grpo = "grpo_tiny" in names
    assert len(evals) == has_grpo + len(p.nurl_seeds) + len(p.continued_seeds)
    for e in evals:
        assert f"model.name_or_path={RUN_REF % e.deps[0]}/policy" in e.args
    ablations = {
        "ablation_nurl_gate",
        "ablation_nurl_hint_type",
        "ablation_nurl_source",
        "ablation_nurl_hinted",
    }
    has_gamma = p.groups is None or "gamma" in p.groups
    has_ablations = p.groups is None or "ablation" in p.groups
    gammas = {f"nudging_gamma_s{n}" for n in p.nudging_seeds} if has_gamma else set()
    assert {s.name for s in st if s.multirun} == (ablations if has_ablations else set()) | gammas
    if p.groups is not None:  # a restricted profile keeps exactly its groups
        assert {s.group for s in st} == set(p.groups)


def test_nurl_profile_runs_the_config_sizes():
    st = {s.name: s for s in build_stages("nurl")}
    assert not any(a.startswith("budget.") for s in st.values() for a in s.args)
    assert {"nurl_tiny_s2", "grpo_tiny_continued_s2", "eval_nurl_tiny_s2"} <= set(st)
    assert "grpo_tiny" not in st and "nudging_tiny_s0" not in st


def test_nurl_hard_profile_trains_both_methods_on_the_same_set():
    st = {s.name: s for s in build_stages("nurl_hard")}
    for seed in (0, 1, 2):
        nurl, cont = st[f"nurl_tiny_s{seed}"], st[f"grpo_tiny_continued_s{seed}"]
        assert [a for a in nurl.args if a.startswith("budget.")] == [
            a for a in cont.args if a.startswith("budget.")
        ]
        assert "budget.hard_train=256" in nurl.args and f"eval_nurl_tiny_s{seed}" in st
    assert not any(s.multirun for s in st.values()) and "grpo_tiny" not in st


def test_runpy_command_resolves_run_dirs(tmp_path):
    st = {s.name: s for s in build_stages("full")}
    cmd = runpy_command("py")
    dirs = {
        "nurl_tiny_s0": tmp_path / "n0",
        "eval_nurl_tiny_s0": tmp_path / "e0",
        "nudging_gamma_s1": tmp_path / "g",
    }
    ev = cmd(st["eval_nurl_tiny_s0"], dirs["eval_nurl_tiny_s0"], dirs)
    assert ev[:2] == ["py", "run.py"] and f"model.name_or_path={tmp_path / 'n0'}/policy" in ev
    assert ev[-1] == f"hydra.run.dir={tmp_path / 'e0'}"
    g = cmd(st["nudging_gamma_s1"], dirs["nudging_gamma_s1"], dirs)
    assert g[2] == "-m" and "sweep=gamma" in g and g[-1] == f"hydra.sweep.dir={tmp_path / 'g'}"
    # another nudger build seed, at the profile's zoo variant
    assert "pipeline.nudging.name_or_path=zoo:tiny-aligned-small@${budget.zoo}-s1" in g


@pytest.mark.slow
def test_tiny_profile_end_to_end_twice(tmp_path):
    """The whole stage list under debug=tiny, then again from the cache."""
    env = {**os.environ, "NUDGEKIT_CACHE": os.environ.get("NUDGEKIT_CACHE", str(tmp_path / "c"))}
    cmd = [
        sys.executable,
        "-m",
        "nudgekit.reproduce",
        "--profile",
        "tiny",
        "--root",
        str(tmp_path / "r"),
        "--results",
        str(tmp_path / "res"),
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res = tmp_path / "res"
    for f in (
        "README.md",
        "tinyworld.md",
        "grpo.md",
        "nurl.md",
        "nudging.md",
        "pass_at_k.png",
        "learning_signal.png",
        "nudging_gamma.png",
    ):
        assert (res / f).is_file() and (res / f).stat().st_size > 100, f
    nurl = (res / "nurl.md").read_text()
    assert "no result" not in nurl and "pass@16" in nurl and "GRPO-continued" in nurl
    assert "gamma" in (res / "nudging.md").read_text()
    t = time.monotonic()
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "done 0" in again.stdout and "failed 0" in again.stdout
    assert time.monotonic() - t < 120


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, list):
        path.write_text("".join(json.dumps(r) + "\n" for r in obj))
    else:
        path.write_text(json.dumps(obj))


def test_writer_tables_from_run_dirs(tmp_path):
    """Run dirs in the pipelines' formats -> the numbers land in the right tables and plots."""
    from nudgekit.reproduce.scheduler import StageResult
    from nudgekit.reproduce.writer import write_results

    st = build_stages("tiny")
    st_by_name = {s.name: s for s in st}
    dirs = {s.name: tmp_path / s.name for s in st}
    for name in ("eval_base", *(f"eval_{n}" for n in dirs if n.startswith(("nurl_", "grpo_")))):
        c = 0.5 if "nurl" in name else 0.25
        _write(dirs[name] / "summary.json", {"eval/pass@1": c / 2, "eval/pass@4": c})
    for name in dirs:
        if name.startswith(("nurl_tiny_s", "grpo_tiny_continued_s")):
            after = 0.25 if name.startswith("nurl") else 0.75  # zero-std share: signal 0.75 / 0.25
            rows = [{"step": 1, "nurl/stage": 1, "train/frac_reward_zero_std": 0.9}]
            rows += [
                {
                    "step": s,
                    "nurl/stage": 2,
                    "train/frac_reward_zero_std": after,
                    "nurl/frac_reward_zero_std_before": 0.75,
                    "nurl/frac_reward_zero_std_after": after,
                }
                for s in (2, 3)
            ]
            if name == "nurl_tiny_s1":  # a run with the current keys: the signals as logged
                rows = [
                    {
                        **r,
                        "nurl/signal_unhinted": 0.125,
                        "nurl/signal_mixed": 0.5,
                        "train/reward": 0.25,
                        "train/reward_mixed": 0.75,
                    }
                    for r in rows
                ]
            _write(dirs[name] / "metrics.jsonl", rows)
            # the detector may fire again in stage 2: the table shows where stage 2 began
            _write(
                dirs[name] / "summary.json",
                {
                    "train/plateau_step": 3.0,
                    "nurl/stage2_start": 1.0,
                    "nurl/stage1_plateau": float("s1" in name),
                },
            )
    for seed in (0, 1):  # two nudger seeds' gamma sweeps: the table shows mean ± t-interval
        for i, g in enumerate(("0.1", "0.5")):
            job = dirs[f"nudging_gamma_s{seed}"] / str(i)
            acc = 0.1 * (i + 1) + 0.2 * seed
            _write(
                job / "summary.json", {"nudging/accuracy": acc, "nudging/nudge_token_share": 0.3}
            )
            (job / ".hydra").mkdir()
            (job / ".hydra" / "overrides.yaml").write_text(
                f"- decoder.gamma={g}\n- experiment=nudging_tiny\n"
            )
    _write(
        dirs["nudging_tiny_s1"] / "summary.json",
        {"nudging/accuracy": 0.75, "nudger_only/accuracy": 0.25},
    )
    res = {n: StageResult(n, "cached", d, tmp_path / "x.log") for n, d in dirs.items()}
    res["nudging_tiny_s0"].status = "failed"
    out = {p.name for p in write_results(res, st, tmp_path / "res", profile="tiny")}
    assert {"nurl.md", "pass_at_k.png", "learning_signal.png", "nudging_gamma.png"} <= out
    nurl = (tmp_path / "res" / "nurl.md").read_text()
    assert "| NuRL (2 runs) | 0.250 ± 0.000 | 0.500 ± 0.000 |" in nurl
    assert "| base (tiny-policy) (1 run) | 0.125 | 0.250 |" in nurl
    # NuRL after hinting / un-hinted / continued, mean of s0 (old keys) and s1 (new keys)
    assert "| 1-1 | 0.625 | 0.188 | 0.250 |" in nurl
    assert "| nurl_tiny_s0 | 1 (cap) |" in nurl and "stage 2 from step" in nurl
    # switch, kept, un-hinted signal, after hinting, hinted, lifted, pass rate, train reward
    assert "| nurl_tiny_s1 | 1 (plateau) | — | 0.125 | 0.500 | — | — | — | 0.250 |" in nurl
    nud = (tmp_path / "res" / "nudging.md").read_text()
    # t(0.975, 1 df) = 12.706: half-width 12.706 * 0.1414 / sqrt(2) = 1.271
    assert "| 0.1 | 0.200 ± 1.271 (0.100, 0.300) | — | 0.300 ± 0.000 (0.300, 0.300) | — |" in nud
    assert "| 0.5 | 0.300 ± 1.271 (0.200, 0.400) |" in nud
    assert "nudging_tiny_s0`: no result (stage failed" in nud
    # commands are shell-quoted: they run as printed (the shell keeps `${budget.zoo}` literal)
    line = next(x for x in nud.splitlines() if "@${budget.zoo}-s1" in x and "sweep" not in x)
    assert shlex.split(line.strip())[2:] == list(st_by_name["nudging_tiny_s1"].args)
    assert "| nudging strict | 0.750 |" in nud and "| nudger-only strict | 0.250 |" in nud
