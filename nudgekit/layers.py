"""The import layers of `nudgekit`, lowest first (checked by `tests/test_layers.py`).

A module may import modules of its own package and of packages in strictly lower layers, never
of a peer or of a higher layer; function-level (lazy) imports count like module-level ones.

    0  errors                               the package's exception type
    1  config, rundir, runtime, layers      resolvers and paths, run dirs, process set-up
    2  data, rewards, tracking, reports     problems, verifiers, run logs, run-dir writers
    3  models, zoo                          loading models; the tiny world (tasks, built models)
    4  inference                            lean forward, KV stores, per-row caches
    5  engines                              generation backends (hf, vllm, openai)
    6  nudging                              the nudging decoders and their experiment
    7  eval                                 pass@k, the eval pipeline, run readers, zoo checks
    8  rl                                   GRPO
    9  nurl                                 hints + GRPO
    10 serve, reproduce                     the server; the report rebuilder
    11 callbacks, cluster, launch, cli      Hydra entry points and callbacks

`models` reaches the zoo only through a `zoo:` scheme resolved by name (`models.schemes`), and
`nudgekit.zoo.ZooBuild` (the build pipeline) is loaded lazily by name from configs.
"""

from __future__ import annotations

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("config", "rundir", "runtime", "layers"),
    ("data", "rewards", "tracking", "reports"),
    ("models", "zoo"),
    ("inference",),
    ("engines",),
    ("nudging",),
    ("eval",),
    ("rl",),
    ("nurl",),
    ("serve", "reproduce"),
    ("callbacks", "cluster", "launch", "cli"),
)


def area(module: str) -> str:
    """The top-level part of `nudgekit.<area>...` (`""` for the `nudgekit` package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int:
    """The layer index of a `nudgekit` module (the `nudgekit` package itself, which re-exports
    `errors`: 1); KeyError if its package is unlisted."""
    name = area(module)
    if not name:
        return 1
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise KeyError(f"{module}: its package {name!r} is in no layer of nudgekit.layers.LAYERS")
