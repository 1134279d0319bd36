"""The versioned stage list of `make reproduce`: every stage is one `run.py` invocation (exactly
what a user would type), with its dependencies and a wall-time estimate for the ETA.

Budgets are per profile: `full` reduces the expensive experiments so that the whole list fits in
<= 60 minutes on two cores (see experiments/README.md for how each budget was chosen); `tiny` runs
the same list under `debug=tiny` in minutes (the end-to-end test). Bump STAGE_LIST_VERSION whenever
the meaning of a stage changes without its command line changing: every cache key changes with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STAGE_LIST_VERSION = "3"

# `{run:<stage>}` in an argument is replaced by that stage's run dir (for a sweep: its sweep dir)
RUN_REF = "{run:%s}"


@dataclass(frozen=True)
class Stage:
    """One `run.py` call.

    Attributes:
        name: unique stage name; also names its run dir and log file.
        args: the run.py overrides; may reference a dependency's run dir as `{run:<name>}`.
        deps: stages that must finish first (and whose cache keys enter this one's).
        multirun: a Hydra sweep (`-m`); its jobs land in `<run dir>/<job number>`.
        slots: cores the stage occupies (the zoo build uses two worker processes).
        est_s: expected wall seconds on an idle core, for the ETA only.
    """

    name: str
    args: tuple[str, ...]
    deps: tuple[str, ...] = ()
    multirun: bool = False
    slots: int = 1
    est_s: float = 60.0
    group: str = field(default="", compare=False)


@dataclass(frozen=True)
class Profile:
    """Per-experiment budget overrides (appended after the stage's own arguments)."""

    name: str
    common: tuple[str, ...]
    budgets: dict[str, tuple[str, ...]]
    nurl_seeds: tuple[int, ...] = (0, 1, 2)
    continued_seeds: tuple[int, ...] = (0, 1, 2)
    nudging_seeds: tuple[int, ...] = (0, 1, 2)  # nudger build seeds (tiny-aligned-small@...-sN)
    est: dict[str, float] = field(default_factory=dict)
    groups: frozenset[str] | None = None  # stage groups kept (None: all)
    results: str | None = None  # where the reports go, relative to the repo (None: the root)

    def extra(self, group: str) -> tuple[str, ...]:
        return self.common + self.budgets.get(group, ())


# CPU seconds per stage on one thread (~ wall on an idle core), measured on the 2-core box with
# /usr/bin/time at these budgets (experiments/README.md, "The stage list"); ablations per job
_FULL_EST = {
    "zoo": 720,
    "check": 140,
    "grpo": 240,
    "nurl": 240,
    "continued": 185,
    "ablation": 65,
    "nudging": 115,
    "gamma": 130,
    "eval": 95,
}

_NURL_FULL = ("budget.problems=256", "budget.steps=20")
FULL = Profile(
    name="full",
    common=("logger=disabled",),
    budgets={
        "nurl": _NURL_FULL,
        "continued": _NURL_FULL,
        "ablation": (
            "budget.problems=64",
            "budget.steps=6",
            "data.n=32",
            "pipeline.validation.every=3",
            "pipeline.prompts_per_step=8",
        ),
        "gamma": ("budget.problems=40", "pipeline.baselines=[]"),
        "eval": ("budget.problems=32",),
    },
    est=_FULL_EST,
    results="experiments/results",
)

_TINY_NURL = ("debug=tiny", "data.n=8")
TINY = Profile(
    name="tiny",
    common=("logger=disabled",),
    budgets={
        "zoo": ("debug=tiny",),
        "check": ("debug=tiny", "pipeline.n_easy=8"),
        "grpo": ("debug=tiny", "data.n=8"),
        "nurl": _TINY_NURL,
        "continued": _TINY_NURL,
        "ablation": (*_TINY_NURL, "budget.steps=1"),
        "nudging": ("debug=tiny",),
        "gamma": ("debug=tiny", "pipeline.baselines=[]"),
        "eval": ("debug=tiny", "budget.samples=16"),
    },
    nurl_seeds=(0, 1),
    continued_seeds=(0, 1),
    nudging_seeds=(0, 1),
    # measured on the shared 2-core box (mostly process start-up): ~40 s a stage, ~55 s a sweep
    est={**{k: 40.0 for k in _FULL_EST}, "zoo": 70.0, "ablation": 20.0, "gamma": 55.0},
)

# the NuRL experiments at their config sizes (no budget cuts): 3 seeds of nurl_tiny and
# grpo_tiny_continued, the four ablation sweeps, and the hard-split evaluations; ~1 h on 2 cores
NURL = Profile(
    name="nurl",
    common=("logger=disabled",),
    budgets={},
    est={**_FULL_EST, "nurl": 330, "continued": 300, "ablation": 330, "eval": 150},
    groups=frozenset({"zoo", "nurl", "continued", "ablation", "eval"}),
    results="experiments/results/nurl_full",
)

# NuRL vs GRPO-continued with the hard_train half in the training set (256 medium + 256 level-5
# problems, stage-1 cap 20 steps, 20 stage-2 steps), 3 seeds each, and the hard-split evaluations
# (64 problems x 256 samples); no ablations
_NURL_HARD = ("budget.problems=256", "budget.hard_train=256", "budget.steps=20")
NURL_HARD = Profile(
    name="nurl_hard",
    common=("logger=disabled",),
    budgets={"nurl": _NURL_HARD, "continued": _NURL_HARD, "eval": ("budget.problems=64",)},
    est={**_FULL_EST, "nurl": 400, "continued": 300, "eval": 150},
    groups=frozenset({"zoo", "nurl", "continued", "eval"}),
    results="experiments/results/nurl_hard",
)

PROFILES = {p.name: p for p in (FULL, TINY, NURL, NURL_HARD)}

# the ablation sweeps (conf/sweep/*.yaml) and their number of jobs (for the ETA)
ABLATIONS = {"nurl_gate": 4, "nurl_hint_type": 4, "nurl_source": 2, "nurl_hinted": 2}


def _stage(
    profile: Profile,
    group: str,
    name: str,
    args: tuple[str, ...],
    deps: tuple[str, ...],
    jobs: int = 1,
    **kw,
) -> Stage:
    return Stage(
        name=name,
        args=args + profile.extra(group),
        deps=deps,
        est_s=jobs * profile.est.get(group, 60.0),
        group=group,
        **kw,
    )


def _training(p: Profile) -> list[Stage]:
    z = ("zoo_build",)
    out = [_stage(p, "grpo", "grpo_tiny", ("experiment=grpo_tiny",), z)]
    out += [
        _stage(p, "nurl", f"nurl_tiny_s{s}", ("experiment=nurl_tiny", f"seed={s}"), z)
        for s in p.nurl_seeds
    ]
    out += [
        _stage(
            p,
            "continued",
            f"grpo_tiny_continued_s{s}",
            ("experiment=grpo_tiny_continued", f"seed={s}"),
            z,
        )
        for s in p.continued_seeds
    ]
    out += [
        _stage(
            p,
            "ablation",
            f"ablation_{a}",
            ("experiment=nurl_tiny", f"sweep={a}"),
            z,
            jobs=n,
            multirun=True,
        )
        for a, n in ABLATIONS.items()
    ]
    return out


def _evaluations(p: Profile, trained: list[Stage]) -> list[Stage]:
    base = _stage(p, "eval", "eval_base", ("experiment=nurl_tiny_eval",), ("zoo_build",))
    out = [base]
    for t in trained:
        if t.group in ("grpo", "nurl", "continued"):
            policy = f"model.name_or_path={RUN_REF % t.name}/policy"
            out.append(
                _stage(
                    p, "eval", f"eval_{t.name}", ("experiment=nurl_tiny_eval", policy), (t.name,)
                )
            )
    return out


# the nudging comparison runs at gamma 0.5, where the tiny world shows the mechanism (the gamma
# sweep covers the paper's 0.3); seeds > 0 swap in another nudger build and keep one baseline
NUDGING_GAMMA = "decoder.gamma=0.5"


def nudger_seed(seed: int) -> tuple[str, ...]:
    """Overrides for nudger build seed `seed` (none for the default build)."""
    if seed == 0:
        return ()
    return (f"pipeline.nudging.name_or_path=zoo:tiny-aligned-small@${{budget.zoo}}-s{seed}",)


def _nudging(p: Profile) -> list[Stage]:
    z = ("zoo_build",)
    out = []
    for s in p.nudging_seeds:
        one = ("pipeline.baselines=[nudger_only]",) if s else ()
        args = ("experiment=nudging_tiny", NUDGING_GAMMA, *one, *nudger_seed(s))
        out.append(_stage(p, "nudging", f"nudging_tiny_s{s}", args, z))
    for s in p.nudging_seeds:
        args = ("experiment=nudging_tiny", "sweep=gamma", *nudger_seed(s))
        out.append(_stage(p, "gamma", f"nudging_gamma_s{s}", args, z, multirun=True))
    return out


def build_stages(profile: str | Profile = "full") -> list[Stage]:
    """The stage list of `profile`, dependencies before dependants."""
    p = PROFILES[profile] if isinstance(profile, str) else profile
    zoo = _stage(p, "zoo", "zoo_build", ("experiment=zoo_build",), (), slots=2)
    check = _stage(p, "check", "tinyworld_check", ("experiment=tinyworld_check",), ("zoo_build",))
    trained = _training(p)
    nudging = _nudging(p)
    stages = [zoo, check, *trained, *_evaluations(p, trained), *nudging]
    if p.groups is None:
        return stages
    kept = [s for s in stages if s.group in p.groups]
    names = {s.name for s in kept}
    return [s for s in kept if all(d in names for d in s.deps)]
