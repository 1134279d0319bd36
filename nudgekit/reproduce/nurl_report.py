"""nurl.md (+ pass_at_k.png, learning_signal.png): the 3-seed NuRL vs GRPO-continued comparison,
the hard-split pass@k of every trained policy, and the ablation sweeps."""

from __future__ import annotations

from nudgekit.eval.runs import pass_curve
from nudgekit.reproduce.collect import (
    read_json,
    read_metrics,
    series,
    signal_curve,
    stage2_curve,
    sweep_jobs,
)
from nudgekit.reproduce.context import Context
from nudgekit.reproduce.plots import pass_at_k_plot, signal_plot
from nudgekit.reproduce.tables import bins, md_table, mean, mean_pm, num

BEFORE, AFTER = "nurl/frac_reward_zero_std_before", "nurl/frac_reward_zero_std_after"
PLAIN = "train/frac_reward_zero_std"
UNHINTED, MIXED = "nurl/signal_unhinted", "nurl/signal_mixed"


def _stage2_mean(rows: list[dict], key: str) -> float | None:
    return mean([v for _, v in series(rows, key, stage=2)])


def _int(v: float | None) -> int | None:
    return None if v is None else int(v)


def unhinted_curve(rows: list[dict]) -> list[float]:
    """Per stage-2 step: share of groups whose G *original* rollouts differ in reward (runs
    before `nurl/signal_unhinted` existed: 1 - the zero-std share before hinting)."""
    return stage2_curve(rows, UNHINTED) or signal_curve(rows, BEFORE) or signal_curve(rows, PLAIN)


def mixed_curve(rows: list[dict]) -> list[float]:
    """Per stage-2 step: the same share after the hinted rollouts were merged in."""
    return stage2_curve(rows, MIXED) or signal_curve(rows, AFTER)


def switch(summary: dict) -> str:
    """Where stage 1 ended, and why: "12 (plateau)" or "20 (cap)"."""
    start = _int(summary.get("nurl/stage2_start"))
    if start is None:
        return "—"
    why = summary.get("nurl/stage1_plateau")
    return f"{start}" if why is None else f"{start} ({'plateau' if why else 'cap'})"


def run_row(label: str, run_dir) -> list:
    """One trained run: the switch, the filter, stage-2 learning signal (un-hinted / after
    hinting), hinting, the un-hinted train reward, val pass@1 start -> end.
    (`train/plateau_step` is not used: the detector keeps running in stage 2 and may fire there.)"""
    s, rows = read_json(run_dir / "summary.json"), read_metrics(run_dir)
    return [
        label,
        switch(s),
        _int(s.get("nurl/filter_kept")),
        num(mean(unhinted_curve(rows))),
        num(mean(mixed_curve(rows))),
        num(_stage2_mean(rows, "nurl/groups_hinted"), 1),
        num(_stage2_mean(rows, "nurl/groups_lifted"), 1),
        num(_stage2_mean(rows, "nurl/hinted_pass_rate")),
        num(_stage2_mean(rows, "train/reward")),
        f"{num(s.get('val/pass@1_initial'))} → {num(s.get('val/pass@1'))}",
    ]


RUN_HEADER = [
    "run",
    "stage 2 from step",
    "kept by 8/8 filter",
    "un-hinted signal",
    "signal after hinting",
    "groups hinted / step",
    "lifted / step",
    "hinted pass rate",
    "train reward (un-hinted)",
    "val pass@1 start → end",
]


def _family(ctx: Context, group: str) -> list[tuple[str, object]]:
    return [(n, ctx.dir(n)) for n in ctx.names(group) if ctx.dir(n) is not None]


def _signal_section(ctx: Context) -> tuple[str, dict]:
    nurl, cont = _family(ctx, "nurl"), _family(ctx, "continued")
    curves = {
        "NuRL (after hinting)": [mixed_curve(read_metrics(d)) for _, d in nurl],
        "NuRL (un-hinted)": [unhinted_curve(read_metrics(d)) for _, d in nurl],
        "GRPO-continued": [unhinted_curve(read_metrics(d)) for _, d in cont],
    }
    curves = {k: [c for c in v if c] for k, v in curves.items()}
    curves = {k: v for k, v in curves.items() if v}
    text = (
        '## Per run (stage 2)\n\n"signal" = share of groups whose rewards are not all '
        "equal, mean over the stage-2 steps: *un-hinted* among the G original rollouts (what "
        "plain GRPO would train on; comparable across methods), *after hinting* once the "
        "G−1 hinted rollouts replaced the failed ones (a hinted group keeps one failed "
        'original, so any hinted success makes it count). "lifted" = hinted groups with at '
        'least one hinted success. "train reward" = mean reward of the original rollouts. '
        '"stage 2 from step": where stage 1 ended (plateau: train reward and validation '
        "flat; cap: the step cap).\n\n"
    )
    text += md_table(RUN_HEADER, [run_row(n, d) for n, d in nurl + cont])
    if curves:
        n = min(len(c) for v in curves.values() for c in v)
        width = max(1, n // 8)
        binned = {k: [bins(c[:n], width) for c in v] for k, v in curves.items()}
        labels = [b[0] for b in next(iter(binned.values()))[0]]
        rows = [
            [lab] + [num(mean([run[i][1] for run in runs])) for runs in binned.values()]
            for i, lab in enumerate(labels)
        ]
        text += "\n## Learning-signal fraction per stage-2 step (mean over seeds)\n\n"
        text += md_table(["stage-2 steps", *binned], rows)
    return text, curves


def _passk_section(ctx: Context) -> tuple[str, dict]:
    fams = {
        "base (tiny-policy)": ["eval_base"],
        "GRPO (grpo_tiny)": ["eval_grpo_tiny"],
        "GRPO-continued": [f"eval_{n}" for n in ctx.names("continued")],
        "NuRL": [f"eval_{n}" for n in ctx.names("nurl")],
    }
    curves: dict[str, list[dict[int, float]]] = {}
    per_run: list[tuple[str, dict]] = []
    for fam, names in fams.items():
        got = [(n, pass_curve(read_json(ctx.dir(n) / "summary.json"))) for n in names if ctx.dir(n)]
        got = [(n, c) for n, c in got if c]
        if got:
            curves[fam] = [c for _, c in got]
            per_run += got if len(got) > 1 else []
    if not curves:
        return ctx.missing("eval_base"), curves
    ks = sorted(set.intersection(*(set(c) for runs in curves.values() for c in runs)))
    rows = [
        [f"{fam} ({len(runs)} run{'s' * (len(runs) > 1)})"]
        + [mean_pm([c[k] for c in runs]) for k in ks]
        for fam, runs in curves.items()
    ]
    rows += [[f"  {n}"] + [num(c[k]) for k in ks] for n, c in per_run]
    text = (
        "## Upper limit: pass@k on the hard split (no hints)\n\n"
        f"`{ctx.command('eval_base')}` (and `model.name_or_path=<run dir>/policy` for each "
        "trained policy); mean ± 95% t-interval over seeds.\n\n"
    )
    return text + md_table(["model", *(f"pass@{k}" for k in ks)], rows), curves


def _ablation_section(ctx: Context) -> str:
    if not ctx.names("ablation"):  # a profile without the sweeps
        return ""
    size = " (reduced size)" if ctx.profile == "full" else ""
    text = f"## Ablations{size}\n\n"
    for name in ctx.names("ablation"):
        d = ctx.dir(name)
        text += f"### {name.removeprefix('ablation_')}\n\n`{ctx.command(name)}`\n\n"
        if d is None:
            text += ctx.missing(name)
            continue
        text += md_table(RUN_HEADER, [run_row(label, job) for label, job in sweep_jobs(d)]) + "\n"
    return text


def write_nurl(ctx: Context) -> None:
    sig_text, sig_curves = _signal_section(ctx)
    pk_text, pk_curves = _passk_section(ctx)
    cmds = ctx.commands([n for g in ("nurl", "continued") for n in ctx.names(g)])
    text = ctx.header("NuRL vs GRPO-continued on the tiny world")
    text += f"Commands (each stage's run dir under the reproduce root):\n\n{cmds}"
    text += sig_text + "\n" + pk_text + "\n" + _ablation_section(ctx)
    if pk_curves:
        ctx.written.append(
            pass_at_k_plot(
                pk_curves, ctx.out / "pass_at_k.png", "hard split, no hints (band: seed spread)"
            )
        )
        text += "\n![pass@k](pass_at_k.png)\n"
    if sig_curves:
        ctx.written.append(
            signal_plot(
                sig_curves, ctx.out / "learning_signal.png", "groups with a learning signal"
            )
        )
        text += "\n![learning signal](learning_signal.png)\n"
    ctx.write("nurl.md", text)
