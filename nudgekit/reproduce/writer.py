"""The results writer: stage run dirs -> experiments/results/{README,tinyworld,grpo,nurl,
nudging}.md and the PNG plots. Reads only files the pipelines write; never reruns anything."""

from __future__ import annotations

from pathlib import Path

from nudgekit.eval.runs import pass_curve
from nudgekit.reproduce.collect import read_json, read_metrics, series
from nudgekit.reproduce.context import Context
from nudgekit.reproduce.nudging_report import write_nudging
from nudgekit.reproduce.nurl_report import write_nurl
from nudgekit.reproduce.scheduler import StageResult, fmt_s
from nudgekit.reproduce.stages import Stage
from nudgekit.reproduce.tables import md_table, num


def write_tinyworld(ctx: Context) -> None:
    text = ctx.header("The tiny world: zoo and properties P1-P4")
    z = ctx.dir("zoo_build")
    text += f"## Zoo\n\n`{ctx.command('zoo_build')}`\n\n"
    if z is None:
        text += ctx.missing("zoo_build")
    else:
        zoo = read_json(z / "zoo_build.json")
        text += md_table(
            ["model", "parameters", "weight hash", "final loss", "build CPU s"],
            [
                [
                    n,
                    r.get("n_params"),
                    (r.get("weight_hash") or "")[:16],
                    num(r.get("final_loss")),
                    num(r.get("cpu_seconds"), 0),
                ]
                for n, r in zoo.items()
            ],
        )
    c = ctx.dir("tinyworld_check")
    text += f"\n## Properties\n\n`{ctx.command('tinyworld_check')}`\n\n"
    report = c / "tinyworld_check.md" if c else None
    if report is not None and report.is_file():
        body = report.read_text()
        text += "\n".join(("#" + ln) if ln.startswith("#") else ln for ln in body.splitlines())
        text += "\n"
    else:
        text += ctx.missing("tinyworld_check")
    ctx.write("tinyworld.md", text)


def write_grpo(ctx: Context) -> None:
    text = ctx.header("GRPO on the tiny world") + f"`{ctx.command('grpo_tiny')}`\n\n"
    d = ctx.dir("grpo_tiny")
    if d is None:
        ctx.write("grpo.md", text + ctx.missing("grpo_tiny"))
        return
    s = read_json(d / "summary.json")
    text += md_table(
        ["val pass@1 before", "after", "steps", "plateau step", "train s"],
        [
            [
                num(s.get("val/pass@1_initial")),
                num(s.get("val/pass@1")),
                s.get("train/steps"),
                s.get("train/plateau_step"),
                num(s.get("perf/train_s"), 0),
            ]
        ],
    )
    rows = read_metrics(d)
    val = series(rows, "val/pass@1")
    zero = dict(series(rows, "train/frac_reward_zero_std"))
    text += "\n## Validation pass@1 over steps\n\n" + md_table(
        ["step", "val pass@1", "train frac_reward_zero_std"],
        [[st, num(v), num(zero.get(st))] for st, v in val],
    )
    curves = {
        n: pass_curve(read_json(ctx.dir(n) / "summary.json"))
        for n in ("eval_base", "eval_grpo_tiny")
        if ctx.dir(n)
    }
    curves = {n: c for n, c in curves.items() if c}
    if curves:
        ks = sorted(set.intersection(*(set(c) for c in curves.values())))
        text += "\n## Hard split pass@k (no hints)\n\n" + md_table(
            ["model", *(f"pass@{k}" for k in ks)],
            [[n, *(num(c[k]) for k in ks)] for n, c in curves.items()],
        )
    ctx.write("grpo.md", text)


def write_index(ctx: Context) -> None:
    text = ctx.header("Reproduced results")
    files = sorted(p.name for p in ctx.written)
    text += "Files: " + ", ".join(f"[{f}]({f})" for f in files) + "\n\n## Stages\n\n"
    rows = []
    for s in ctx.stages:
        r = ctx.results.get(s.name)
        rows.append(
            [
                s.name,
                r.status if r else "—",
                fmt_s(r.elapsed_s) if r else "—",
                f"`{ctx.command(s.name)}`",
            ]
        )
    text += md_table(["stage", "status", "wall (when run)", "command"], rows)
    ctx.write("README.md", text)


def write_results(
    results: dict[str, StageResult], stages: list[Stage], out: Path, profile: str = "full"
) -> list[Path]:
    """Write every report and plot into `out`; returns the files written."""
    ctx = Context(results=results, stages=stages, out=Path(out), profile=profile)
    groups = {s.group for s in stages}
    for section, needs in (
        (write_tinyworld, {"check"}),
        (write_grpo, {"grpo"}),
        (write_nurl, {"nurl", "continued", "ablation"}),
        (write_nudging, {"nudging", "gamma"}),
    ):
        if needs & groups:  # a profile without these stages gets no empty report
            section(ctx)
    write_index(ctx)
    return ctx.written
