"""Read raw rows through `datasets`: local json/jsonl/parquet files, folders, or hub names.

`read_source` returns `(label, dataset)` pairs, one per file, where the label is the file path
used in error messages. A source is local when it exists on disk or looks like a path (has a data
suffix, starts with `.`, `/` or `~`, or has more than one `/`); anything else (`gsm8k`,
`openai/gsm8k`) is a hub name. Hub access fails fast with one line when offline instead of
retrying for minutes: `HF_HUB_OFFLINE=1` / `HF_DATASETS_OFFLINE=1` go straight to the local cache,
otherwise the hub endpoint is probed with a short timeout first.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import datasets

from nudgekit.errors import NudgekitError

DATA_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
HUB_PROBE_TIMEOUT_S = 5.0
_TRUTHY = {"1", "true", "yes", "on"}


def is_local(source: str) -> bool:
    """Whether `source` names a local path rather than a hub dataset id."""
    if Path(source).expanduser().exists():
        return True
    return (
        Path(source).suffix in DATA_SUFFIXES
        or source.startswith((".", "/", "~"))
        or source.count("/") > 1
    )


def read_source(
    source: str, split: str = "train", name: str | None = None
) -> list[tuple[str, datasets.Dataset]]:
    """Load a source as `(label, dataset)` pairs (one per file; one pair for a hub dataset).

    Args:
        source: a .json/.jsonl/.parquet file, a folder holding `<split>.*` or `<split>-*.*` files,
            or a hub dataset id.
        split: the split to read (files in a folder are chosen by it; ignored for one file).
        name: the hub dataset configuration (e.g. ``"main"`` for openai/gsm8k).

    Returns:
        `(label, dataset)` pairs, label being the file path (or ``"<id> (hub)"``).

    Raises:
        NudgekitError: missing path, no file for the split, unreadable file, unreachable hub.
    """
    if not is_local(source):
        return [(f"{source} (hub)", read_hub(source, split=split, name=name))]
    path = Path(source).expanduser()
    if not path.exists():
        raise NudgekitError(f"{source}: no such file or directory")
    files = split_files(path, split) if path.is_dir() else [path]
    labels = [str(f) if f == path else str(Path(source) / f.relative_to(path)) for f in files]
    return [(label, read_file(f, label)) for f, label in zip(files, labels)]


def split_files(folder: Path, split: str) -> list[Path]:
    """The data files of `split` in `folder` (searched recursively), in sorted order.

    A file belongs to the split when its stem is the split name or starts with
    `<split>-`, `<split>_` or `<split>.` (the hub's `data/train-00000-of-00002.parquet` layout).
    """
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)
    chosen = [p for p in found if _stem_matches(p.stem, split)]
    if not chosen:
        names = ", ".join(str(p.relative_to(folder)) for p in found[:10]) or "no data files"
        raise NudgekitError(
            f"{folder}: no .json/.jsonl/.parquet file for split '{split}' (found: {names})"
        )
    return chosen


def _stem_matches(stem: str, split: str) -> bool:
    return stem == split or stem.startswith((f"{split}-", f"{split}_", f"{split}."))


def read_file(path: Path, label: str | None = None) -> datasets.Dataset:
    """Read one local data file with `datasets`, turning failures into one line naming the file.

    Args:
        path: a .json, .jsonl or .parquet file.
        label: how to name the file in errors (defaults to `path`).

    Returns:
        The file's rows as a `datasets.Dataset`.
    """
    label = label or str(path)
    builder = DATA_SUFFIXES.get(path.suffix)
    if builder is None:
        raise NudgekitError(
            f"{label}: unsupported file type '{path.suffix}' (expected .json, .jsonl or .parquet)"
        )
    if builder == "json":
        # the arrow reader stores bad bytes as they are; they only fail when a row is decoded
        check_utf8(path, label)
    try:
        with _quiet_progress():
            return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file; re-diagnosed below
        detail = diagnose_json(path) if builder == "json" else None
        raise NudgekitError(f"{label}: {detail or _first_line(err)}") from err


def check_utf8(path: Path, label: str | None = None) -> None:
    """Refuse a text data file that is not valid UTF-8, naming the first bad line and byte.

    Args:
        path: the file (read line by line, so memory stays flat for large files).
        label: how to name the file in errors (defaults to `path`).

    Raises:
        NudgekitError: ``"<file> line N: not valid UTF-8 (byte 0xE9 at column C) ..."``.
    """
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise NudgekitError(
                    f"{label or path} line {line_no}: not valid UTF-8 (byte "
                    f"0x{line[err.start]:02X} at column {err.start + 1}); re-save the file as UTF-8"
                ) from None


def diagnose_json(path: Path) -> str | None:
    """Find why a JSON/JSON-lines file does not parse, as ``"line N: ..."`` (None if it does).

    The arrow reader only says "parse error in row 1" for its block, so the file is re-read with
    the standard library to name the exact line.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            return f"line {err.lineno}: invalid JSON ({err.msg})"
        for row, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                return f"row {row}: expected a JSON object, got {type(record).__name__}"
        return None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            return f"line {line_no}: invalid JSON ({err.msg})"
        if not isinstance(record, dict):
            return f"line {line_no}: expected a JSON object, got {type(record).__name__}"
    return None


def read_hub(source: str, split: str = "train", name: str | None = None) -> datasets.Dataset:
    """Load a hub dataset split, failing within seconds when the hub cannot be reached.

    Args:
        source: hub dataset id, e.g. ``"openai/gsm8k"``.
        split: split name.
        name: dataset configuration name.

    Returns:
        The split as a `datasets.Dataset`.
    """
    where = f"hub dataset '{source}'" + (f" ({name})" if name else "") + f" split '{split}'"
    if not hub_offline():
        reason = probe_hub()
        if reason is not None:
            raise NudgekitError(
                f"{where}: cannot reach {hub_endpoint()} ({reason}); pass a local "
                "file, or set HF_HUB_OFFLINE=1 to use the local cache"
            )
    try:
        return datasets.load_dataset(source, name=name, split=split)
    except Exception as err:  # noqa: BLE001 - hub/cache failures are environment errors for users
        raise NudgekitError(f"{where}: {_first_line(err)}") from err


def hub_offline() -> bool:
    """Whether the user asked for offline hub access (env vars, or datasets' own setting)."""
    env = (os.environ.get(k, "").strip().lower() for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(v in _TRUTHY for v in env) or bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))


def hub_endpoint() -> str:
    """The hub URL in use (`HF_ENDPOINT` overrides huggingface.co, e.g. for mirrors)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def probe_hub(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Return None when the hub endpoint answers within `timeout_s`, else a short reason."""
    import requests  # local: only hub loads need it

    try:
        requests.head(hub_endpoint(), timeout=timeout_s, allow_redirects=False)
    except requests.RequestException as err:
        return type(err).__name__
    return None


@contextmanager
def _quiet_progress():
    # Local files load in milliseconds; "Generating train split" bars per file are only noise,
    # and a bad file would otherwise log the reader's error before our one-line NudgekitError.
    was_enabled = datasets.is_progress_bar_enabled()
    logger = logging.getLogger("datasets")
    level = logger.level
    datasets.disable_progress_bars()
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
        if was_enabled:
            datasets.enable_progress_bars()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    cause = err.__cause__ or err.__context__
    # datasets wraps reader failures in a generic "An error occurred while generating the
    # dataset"; the cause says what actually went wrong.
    if cause is not None and (not text or "error occurred while generating" in text[0]):
        return _first_line(cause)
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
