"""The tracker's plain-file side: append-only JSONL streams and atomically rewritten documents.

These files are the source of truth a run leaves behind whatever W&B does: `metrics.jsonl`,
`tables/<name>.jsonl`, `summary.json`, `config.yaml`. JSONL lines are flushed as they are
written, so a run killed mid-way (SIGKILL, OOM) keeps every line logged before the kill; files
are opened in append mode, so a resumed run continues the same stream.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any

import yaml

from nudgekit.errors import NudgekitError

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class JsonlFile:
    """An append-only JSON Lines file, opened on first write and flushed after every line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append records, one strict-JSON object per line, and flush.

        Args:
            records: JSON-compatible dicts (see `values.to_jsonable`).
        """
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        lines = [json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records]
        self._handle.write("".join(lines))
        self._handle.flush()

    def close(self) -> None:
        """Close the file; a later `write` reopens it in append mode."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSONL file written by the tracker (blank lines skipped).

    Args:
        path: the file.

    Returns:
        One dict per line.
    """
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_atomic(path: Path, text: str) -> None:
    """Write a text file via a temp file + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(data: Any) -> str:
    """Pretty strict JSON for documents such as `summary.json`."""
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def dump_yaml(data: Any) -> str:
    """Block-style YAML that keeps the config's key order."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def table_filename(name: str) -> str:
    """The file name of a table's JSONL stream: ``eval/samples`` -> ``eval_samples.jsonl``.

    Args:
        name: the table's logging name (W&B keeps it verbatim).

    Returns:
        A safe single-component file name.

    Raises:
        NudgekitError: when nothing usable is left of the name.
    """
    stem = _UNSAFE_NAME_CHARS.sub("_", name).strip("._")
    if not stem:
        raise NudgekitError(f"tracking: table name {name!r} has no usable characters")
    return f"{stem}.jsonl"
