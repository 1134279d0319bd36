"""The zoo registry: named tiny models, their configs, and the hash-keyed build cache.

Names: ``tiny-policy``, ``tiny-base-large``, ``tiny-aligned-small``, ``tiny-aligned-large``,
optionally with a variant suffix ``@<variant>``: ``@full`` (default) or ``@test`` (a reduced
model that builds in seconds, for tests), and a build seed ``-s<seed>`` (``@full-s1``).
``resolve("tiny-policy@test")`` builds on first use into ``$NUDGEKIT_CACHE/zoo/<name>-<confighash>``
(default root ``~/.cache/nudgekit``) through a temp dir + rename, so a killed build never leaves
a half model, and returns that directory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from nudgekit.config import cache_root
from nudgekit.errors import NudgekitError
from nudgekit.zoo.tasks import VERSION as TASKS_VERSION

ZOO_VERSION = "zoo-v4"  # bump when building code changes what a config produces
VARIANTS = ("full", "test")
META_FILE = "zoo.json"


@dataclass(frozen=True)
class ZooSpec:
    """Everything that determines a zoo model (its hash is the cache key).

    Args:
        arch: "qwen2" or "llama".
        tokenizer: "char" or "bpe".
        role: SFT data role ("policy", "base", "aligned", "aligned_weak"; `nudgekit.zoo.data`).
        hidden: hidden size; layers/heads/ffn: depth, attention heads, MLP width.
        steps, batch_size, lr, n_examples: SFT schedule and data size.
        init_from: another zoo name whose weights (and tokenizer) this model continues from.
        seed: seeds init, data and order.
    """

    arch: str
    tokenizer: str
    role: str
    hidden: int
    layers: int
    heads: int
    ffn: int
    steps: int
    batch_size: int
    lr: float
    n_examples: int
    init_from: str | None = None
    seed: int = 0
    max_len: int = 256


FULL: dict[str, ZooSpec] = {
    "tiny-policy": ZooSpec(
        arch="qwen2",
        tokenizer="char",
        role="policy",
        hidden=128,
        layers=4,
        heads=4,
        ffn=384,
        steps=1200,
        batch_size=32,
        lr=3e-3,
        n_examples=38400,
    ),
    "tiny-base-large": ZooSpec(
        arch="llama",
        tokenizer="bpe",
        role="base",
        hidden=192,
        layers=4,
        heads=4,
        ffn=512,
        steps=900,
        batch_size=32,
        lr=2e-3,
        n_examples=28800,
    ),
    "tiny-aligned-large": ZooSpec(
        arch="llama",
        tokenizer="bpe",
        role="aligned",
        hidden=192,
        layers=4,
        heads=4,
        ffn=512,
        steps=150,
        batch_size=32,
        lr=1e-3,
        n_examples=4800,
        init_from="tiny-base-large",
    ),
    "tiny-aligned-small": ZooSpec(
        arch="qwen2",
        tokenizer="char",
        role="aligned_weak",
        hidden=96,
        layers=2,
        heads=4,
        ffn=256,
        steps=2500,
        batch_size=32,
        lr=3e-3,
        n_examples=9600,
    ),
}
_TEST_SHRINK = {
    "hidden": 32,
    "layers": 1,
    "heads": 2,
    "ffn": 64,
    "steps": 6,
    "batch_size": 8,
    "n_examples": 64,
}
NAMES = tuple(FULL)


def split_seed(variant: str) -> tuple[str, int | None]:
    """``"full-s2"`` -> ``("full", 2)``; ``"full"`` -> ``("full", None)`` (the spec's own seed)."""
    stem, sep, seed = variant.rpartition("-s")
    if sep and seed.isdigit():
        return stem, int(seed)
    return variant, None


def parse_name(name: str) -> tuple[str, str]:
    """Split ``"tiny-policy@test"`` into ``("tiny-policy", "test")``; variant defaults to full.

    A variant may end in ``-s<seed>`` (``"tiny-aligned-small@full-s1"``): the same model built
    with another seed (init, data and order); the suffix is dropped when it names the default.
    """
    base, _, variant = name.partition("@")
    stem, seed = split_seed(variant or "full")
    if base not in FULL:
        raise NudgekitError(f"zoo: unknown model {base!r}; known: {list(NAMES)}")
    if stem not in VARIANTS:
        raise NudgekitError(
            f"zoo: unknown variant {stem!r} in {name!r}; known: {list(VARIANTS)} "
            "(optionally with -s<seed>)"
        )
    if seed is None or seed == FULL[base].seed:
        return base, stem
    return base, f"{stem}-s{seed}"


def spec_of(name: str) -> ZooSpec:
    base, variant = parse_name(name)
    stem, seed = split_seed(variant)
    spec = FULL[base]
    spec = replace(spec, **_TEST_SHRINK) if stem == "test" else spec
    return spec if seed is None else replace(spec, seed=seed)


def full_name(base: str, variant: str) -> str:
    return base if variant == "full" else f"{base}@{variant}"


def config_hash(name: str) -> str:
    """Hash of everything that determines the model, including its parent's hash."""
    base, variant = parse_name(name)
    spec = spec_of(name)
    payload = {"spec": asdict(spec), "tasks": TASKS_VERSION, "zoo": ZOO_VERSION}
    if spec.init_from:
        payload["parent"] = config_hash(full_name(spec.init_from, variant))
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def model_dir(name: str) -> Path:
    canonical = full_name(*parse_name(name))  # "x@full" and "x" share one directory
    return cache_root() / "zoo" / f"{canonical}-{config_hash(name)}"


def is_built(name: str) -> bool:
    return (model_dir(name) / META_FILE).is_file()


def read_meta(name_or_dir: str | Path) -> dict:
    """The build record (spec, hashes, timing, losses) of a built model."""
    path = Path(name_or_dir) if Path(name_or_dir).is_dir() else model_dir(str(name_or_dir))
    return json.loads((path / META_FILE).read_text())
