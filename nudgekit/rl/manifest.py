"""Checkpoint manifests: every file's size and sha256, written last, verified before loading.

`manifest.json` sits at the top of a checkpoint directory and lists every other file in it
(relative POSIX paths, recursively) with its size and sha256. The checkpoint writer creates it
after all ranks have written their files and before the directory is renamed into place, so a
`step-*` directory with a manifest is one that finished writing. `verify()` re-hashes the files
and names the first problem: a missing, truncated, altered or unlisted file. DeepSpeed unpickles
its state (`torch.load(weights_only=False)`), so its files are only ever loaded after this check.

The manifest is a checksum, not a signature: it detects corruption and files swapped in without
rewriting it, not an attacker who can also rewrite `manifest.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 20


def file_digest(path: Path, sync: bool = False) -> str:
    """The sha256 of a file, read in 1 MiB chunks.

    Args:
        path: the file.
        sync: also flush the file to disk (the writer does, so a renamed checkpoint is durable).

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
        if sync:
            os.fsync(f.fileno())
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    """Every file under `directory` except the manifest, as sorted relative POSIX paths."""
    out = []
    for path in directory.rglob("*"):
        if path.is_file() or path.is_symlink():
            rel = path.relative_to(directory).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def write_manifest(directory: Path, **meta: Any) -> Path:
    """Hash every file of `directory` and write `manifest.json` (temp file + rename).

    Args:
        directory: the checkpoint directory, complete except for its manifest.
        **meta: JSON-able fields stored beside the file list (e.g. `step`).

    Returns:
        The manifest's path.
    """
    files = {
        rel: {
            "size": (directory / rel).stat().st_size,
            "sha256": file_digest(directory / rel, sync=True),
        }
        for rel in _files(directory)
    }
    data = {"format": FORMAT, **meta, "files": files}
    tmp, final = directory / f".{MANIFEST}.tmp", directory / MANIFEST
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The parsed manifest, or None when the directory has none (or it is not a file list)."""
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    return data if isinstance(files, dict) else None


def verify(directory: Path) -> str | None:
    """Check every file of a checkpoint against its manifest.

    Sizes and the file set are checked first (cheap), then the hashes.

    Args:
        directory: a checkpoint directory holding `manifest.json`.

    Returns:
        None when everything matches, else a short description of the first problem, such as
        ``"torch_state.pt: sha256 does not match manifest.json"``.
    """
    if not (directory / MANIFEST).is_file():
        return f"no {MANIFEST}"
    manifest = read_manifest(directory)
    if manifest is None:
        return f"{MANIFEST} is unreadable"
    listed: dict[str, dict] = manifest["files"]
    present = _files(directory)
    extra = sorted(set(present) - set(listed))
    if extra:
        return f"{extra[0]}: not listed in {MANIFEST}"
    for rel, entry in sorted(listed.items()):
        path = directory / rel
        if not path.is_file():
            return f"{rel}: missing"
        size, expected = path.stat().st_size, entry.get("size")
        if size != expected:
            what = "truncated to" if isinstance(expected, int) and size < expected else "has"
            return f"{rel}: {what} {size} bytes, {MANIFEST} says {expected}"
    for rel, entry in sorted(listed.items()):
        if file_digest(directory / rel) != entry.get("sha256"):
            return f"{rel}: sha256 does not match {MANIFEST}"
    return None
