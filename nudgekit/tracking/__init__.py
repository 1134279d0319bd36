"""Experiment tracking: W&B (online / offline / disabled) plus a JSONL mirror always written.

`Tracker` is the one entry point (Hydra: ``_target_: nudgekit.tracking.Tracker`` with
``_partial_: true``; the CLI supplies ``run_dir`` and ``config``). `redact` is the credential
filter applied to everything the tracker writes; `read_jsonl` reads the mirror back.
"""

from __future__ import annotations

from nudgekit.tracking.files import read_jsonl
from nudgekit.tracking.redact import redact, redact_argv
from nudgekit.tracking.tracker import Tracker
from nudgekit.tracking.values import to_jsonable

__all__ = ["Tracker", "read_jsonl", "redact", "redact_argv", "to_jsonable"]
