"""nudging.md (+ nudging_gamma.png): nudging vs its baselines and the gamma trade-off, each over
the nudger build seeds (mean and Student-t 95% interval over the per-seed values).

The table functions take plain summaries, so `experiments/nudging/seeds.py` builds the same
tables from run dirs made by hand."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nudgekit.reproduce.collect import override_value, read_json, sweep_jobs
from nudgekit.reproduce.context import Context
from nudgekit.reproduce.plots import gamma_plot
from nudgekit.reproduce.tables import md_table, mean_pm_each

# (summary key, label) of the comparison table and of the gamma table
MAIN = (
    ("nudging/accuracy", "nudging strict"),
    ("nudging/lenient_accuracy", "nudging lenient"),
    ("nudging/nudge_token_share", "nudged-token share"),
    ("nudging/intervention_rate", "interventions / 100 output tokens"),
    ("nudging/stop/nudging_eos", "stop: nudger EOS"),
    ("nudger_only/accuracy", "nudger-only strict"),
    ("base_only/accuracy", "base-only strict"),
    ("base_only/lenient_accuracy", "base-only lenient"),
    ("base_only_stop/accuracy", "base-only (stop at the question) strict"),
    ("aligned_large/accuracy", "aligned-large strict"),
)
GAMMA = (
    ("nudging/accuracy", "strict"),
    ("nudging/lenient_accuracy", "lenient"),
    ("nudging/nudge_token_share", "nudged-token share"),
    ("nudging/intervention_rate", "interventions / 100 tokens"),
)
_DIGITS = {"nudging/intervention_rate": 1}

GammaValues = dict[float, dict[str, list[float]]]


def main_table(summaries: Sequence[dict]) -> str:
    """metric | mean ± 95% CI (per seed) over the seeds' summary.json dicts."""
    rows = []
    for key, label in MAIN:
        vals = [float(s[key]) for s in summaries if key in s]
        if vals:
            rows.append([label, mean_pm_each(vals, _DIGITS.get(key, 3))])
    return md_table(["metric", f"mean ± 95% CI over {len(summaries)} seeds (per seed)"], rows)


def gamma_values(jobs: Iterable[tuple[float, dict]]) -> GammaValues:
    """gamma -> key -> per-seed values, from (gamma, summary) of every sweep job."""
    out: GammaValues = {}
    for g, s in jobs:
        for key, _ in GAMMA:
            if key in s:
                out.setdefault(float(g), {}).setdefault(key, []).append(float(s[key]))
    return dict(sorted(out.items()))


def gamma_table(values: GammaValues) -> str:
    rows = [
        [f"{g:.1f}", *(mean_pm_each(byk.get(k, []), _DIGITS.get(k, 3)) for k, _ in GAMMA)]
        for g, byk in values.items()
    ]
    return md_table(["gamma", *(label for _, label in GAMMA)], rows)


def _methods(ctx: Context) -> str:
    names = ctx.names("nudging")
    text = "## Nudging vs baselines (gamma 0.5, one run per nudger build seed)\n\n"
    text += ctx.commands(names)
    summaries = []
    for n in names:
        d = ctx.dir(n)
        if d is None:
            text += ctx.missing(n)
        elif s := read_json(d / "summary.json"):
            summaries.append(s)
    if not summaries:
        return text
    return text + main_table(summaries)


def sweep_values(ctx: Context) -> GammaValues:
    """The gamma sweeps of every seed, as `gamma_values` reads them."""
    jobs = []
    for n in ctx.names("gamma"):
        d = ctx.dir(n)
        for label, job in sweep_jobs(d) if d else []:
            g = override_value(label, "decoder.gamma")
            s = read_json(job / "summary.json")
            if g is not None and s:
                jobs.append((float(g), s))
    return gamma_values(jobs)


def write_nudging(ctx: Context) -> None:
    text = ctx.header("Nudging on the tiny world") + _methods(ctx)
    names = ctx.names("gamma")
    text += "\n## Gamma sweep (one sweep per nudger build seed)\n\n"
    text += ctx.commands(names)
    text += "".join(ctx.missing(n) for n in names if ctx.dir(n) is None)
    values = sweep_values(ctx)
    if values:
        text += gamma_table(values)
        title = "nudging vs gamma (mean, 95% CI over nudger seeds)"
        ctx.written.append(gamma_plot(values, ctx.out / "nudging_gamma.png", title))
        text += "\n![gamma](nudging_gamma.png)\n"
    ctx.write("nudging.md", text)
