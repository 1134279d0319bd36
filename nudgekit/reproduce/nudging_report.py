"""nudging.md (+ nudging_gamma.png): nudging vs its baselines, and the gamma trade-off."""

from __future__ import annotations

from nudgekit.reproduce.collect import override_value, read_json, sweep_jobs
from nudgekit.reproduce.context import Context
from nudgekit.reproduce.plots import gamma_plot
from nudgekit.reproduce.tables import md_table, num

METHODS = ("base_only", "base_only_stop", "nudger_only", "aligned_large", "nudging")


def _methods(ctx: Context) -> str:
    d = ctx.dir("nudging_tiny")
    text = f"## Nudging vs baselines\n\n`{ctx.command('nudging_tiny')}`\n\n"
    if d is None:
        return text + ctx.missing("nudging_tiny")
    s = read_json(d / "summary.json")
    rows = [
        [m, num(s.get(f"{m}/accuracy")), num(s.get(f"{m}/lenient_accuracy"))]
        for m in METHODS
        if f"{m}/accuracy" in s
    ]
    text += md_table(["method", "strict acc", "lenient acc"], rows)
    stats = [
        ("nudged-token share", "nudging/nudge_token_share"),
        ("nudged-char share", "nudging/nudge_char_share"),
        ("interventions / 100 output tokens", "nudging/intervention_rate"),
        ("rounds per answer", "nudging/rounds"),
        ("output tokens", "nudging/tokens"),
        ("decode seconds", "nudging/seconds"),
    ]
    stops = sorted(k for k in s if k.startswith("nudging/stop/"))
    rows = [[lab, num(s.get(k))] for lab, k in stats if k in s]
    rows += [[f"stop: {k.removeprefix('nudging/stop/')}", num(s[k])] for k in stops]
    return text + "\n" + md_table(["nudging statistic", "value"], rows)


def gamma_rows(ctx: Context) -> list[dict[str, float]]:
    """One dict per gamma job: gamma, strict, lenient, share, interventions, rounds."""
    d = ctx.dir("nudging_gamma")
    out = []
    for label, job in sweep_jobs(d) if d else []:
        s, g = read_json(job / "summary.json"), override_value(label, "decoder.gamma")
        if s and g is not None:
            out.append(
                {
                    "gamma": float(g),
                    "strict": s.get("nudging/accuracy", float("nan")),
                    "lenient": s.get("nudging/lenient_accuracy", float("nan")),
                    "share": s.get("nudging/nudge_token_share", float("nan")),
                    "rate": s.get("nudging/intervention_rate", float("nan")),
                    "rounds": s.get("nudging/rounds", float("nan")),
                }
            )
    return sorted(out, key=lambda r: r["gamma"])


def write_nudging(ctx: Context) -> None:
    text = ctx.header("Nudging on the tiny world") + _methods(ctx)
    text += f"\n## Gamma sweep\n\n`{ctx.command('nudging_gamma')}`\n\n"
    rows = gamma_rows(ctx)
    if not rows:
        text += ctx.missing("nudging_gamma")
    else:
        text += md_table(
            [
                "gamma",
                "strict",
                "lenient",
                "nudged-token share",
                "interventions / 100 tokens",
                "rounds",
            ],
            [
                [
                    r["gamma"],
                    num(r["strict"]),
                    num(r["lenient"]),
                    num(r["share"]),
                    num(r["rate"]),
                    num(r["rounds"], 1),
                ]
                for r in rows
            ],
        )
        ctx.written.append(
            gamma_plot(
                rows, ctx.out / "nudging_gamma.png", "nudging: accuracy and nudged share vs gamma"
            )
        )
        text += "\n![gamma](nudging_gamma.png)\n"
    ctx.write("nudging.md", text)
