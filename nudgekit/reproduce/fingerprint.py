"""What a stage's result depends on besides its command line: the composed Hydra config of its
`run.py` call and the source code that runs it, both folded into the stage's cache key, so a
result is never reused after a config file or the code changed."""

from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from nudgekit.reproduce.stages import Stage

# a dependency's run dir (`{run:<stage>}`) is not known when keys are computed: it stays
# symbolic (`RUN_DIR.<stage>`); the dependency's own key enters the dependant's key
_REF = re.compile(r"\{run:([^}]+)\}")


def code_hash(root: Path) -> str:
    """sha256 over every `*.py` of the `nudgekit` package under `root` and `root/run.py` (path
    and bytes, in path order), except `nudgekit/reproduce/` itself: the stage runner and the
    report writers never run inside a stage, so changing a report does not rerun the stages."""
    root = Path(root)
    own = root / "nudgekit" / "reproduce"
    files = sorted(f for f in (root / "nudgekit").rglob("*.py") if own not in f.parents)
    files += [root / "run.py"] if (root / "run.py").is_file() else []
    h = hashlib.sha256()
    for f in files:
        if "__pycache__" in f.parts:
            continue
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def composed_config(args: tuple[str, ...], conf_dir: Path, multirun: bool = False) -> dict:
    """The config `run.py <args>` composes (interpolations unresolved), plus the sweep's
    parameters for a multirun."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import nudgekit.config  # noqa: F401  (the resolvers the configs name)

    overrides = [_REF.sub(r"RUN_DIR.\1", a) for a in args]
    with initialize_config_dir(version_base="1.3", config_dir=str(Path(conf_dir).resolve())):
        cfg = compose("config", overrides=overrides, return_hydra_config=multirun)
    out: dict[str, Any] = OmegaConf.to_container(cfg, resolve=False)
    hydra = out.pop("hydra", None) or {}
    if multirun:
        out["sweep_params"] = (hydra.get("sweeper") or {}).get("params")
    return out


class Fingerprint:
    """`fingerprint(stage)` -> the composed config's and the code's hashes (the code hashed once).

    Args:
        root: the repository root (with `conf/`, `nudgekit/` and `run.py`).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @cached_property
    def code(self) -> str:
        return code_hash(self.root)

    def config(self, stage: Stage) -> str:
        cfg = composed_config(stage.args, self.root / "conf", stage.multirun)
        blob = json.dumps(cfg, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __call__(self, stage: Stage) -> dict[str, str]:
        return {"config": self.config(stage), "code": self.code}
