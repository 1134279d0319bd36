"""Load causal LMs and tokenizers from a hub id, a local HF directory, the tiny-world zoo
(`zoo:`) or GGUF weights shipped in a pip package (`pkg:`).

Every failure a user can cause (a typo in a path, a hub id with no network, a model without
safetensors weights, a CUDA device on a CPU box) becomes a one-line `NudgekitError` and fails
fast: a hub id is checked with one short HTTP probe before anything is downloaded, and offline
mode (`HF_HUB_OFFLINE=1`) is answered from the local cache only, without touching the network.

Weights load from safetensors only and `trust_remote_code` stays off unless asked for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from nudgekit.errors import NudgekitError
from nudgekit.models.schemes import resolve_scheme

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
# A hub id is `name` or `owner/name` made of word characters, dots and dashes.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_PROBE_TIMEOUT_S = float(os.environ.get("NUDGEKIT_HUB_TIMEOUT", "5"))


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """Map a dtype name ("float32", "bf16", "auto", ...) to a `torch.dtype` ("auto" stays)."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        names = ", ".join(sorted(set(_DTYPES)) + ["auto"])
        raise NudgekitError(f"dtype {dtype!r}: unknown (use one of {names})") from None


def check_device(device: str) -> str:
    """Return `device` if this machine has it, else raise a one-line `NudgekitError`."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise NudgekitError(f"device {device!r}: not a torch device name") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NudgekitError(f"device {device!r}: CUDA is not available on this machine")
    return device


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _from_cache(repo_id: str, revision: str | None) -> str | None:
    """The local snapshot folder of `repo_id` if the HF cache already holds it."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision, local_files_only=True)
    except Exception:  # any miss (not cached, partial, bad revision) means "not in cache"
        return None


def _probe_hub(repo_id: str, revision: str | None) -> None:
    """One short request that fails fast when the hub is unreachable or the id unknown."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"model {repo_id!r}"
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=_PROBE_TIMEOUT_S)
    except GatedRepoError:
        raise NudgekitError(
            f"{what}: gated on the hub; log in (HF_TOKEN) and accept its terms"
        ) from None
    except RevisionNotFoundError:
        raise NudgekitError(f"{what}: revision {revision!r} not found on the hub") from None
    except RepositoryNotFoundError:
        raise NudgekitError(
            f"{what}: not a local directory and not found on the hub (private? set HF_TOKEN)"
        ) from None
    except Exception as exc:  # DNS failure, refused connection, timeout, proxy error
        raise NudgekitError(
            f"{what}: not a local directory and not reachable on the hub ({type(exc).__name__})"
        ) from None


def resolve_model_path(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    """Turn a model reference into something `from_pretrained` can load without surprises.

    Args:
        name_or_path: a local HF directory, a hub id (`owner/name`), or a scheme reference
            (`nudgekit.models.schemes`): `zoo:<name>` for a tiny-world model built by
            `nudgekit.zoo`, `pkg:<distribution>` for GGUF weights shipped in a pip package.
        revision: hub revision (branch, tag or commit); ignored for local directories.

    Returns:
        A local directory path, or the hub id once the hub has answered for it.

    Raises:
        NudgekitError: the reference is neither a model directory nor a reachable hub id.
    """
    name = str(name_or_path)
    name = resolve_scheme(name) or name  # zoo:, pkg:, ... (nudgekit.models.schemes)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise NudgekitError(
                f"model {name!r}: directory has no config.json (not an HF model dir)"
            )
        return str(path)
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise NudgekitError(f"model {name!r}: no such local directory and not a valid hub id")
    cached = _from_cache(name, revision)
    if cached is not None:
        return cached
    if _hub_offline():
        raise NudgekitError(
            f"model {name!r}: not a local directory and not reachable on the hub "
            "(offline, not in cache)"
        )
    _probe_hub(name, revision)
    return name


def load_tokenizer(
    name_or_path: str | os.PathLike,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> Any:
    """Load a tokenizer ready for batched generation.

    The pad token falls back to the EOS token when the tokenizer has none, and padding is on the
    left (generation appends on the right, so prompts must end at the same column).

    Args:
        name_or_path: local directory, hub id or `zoo:<name>`.
        trust_remote_code: allow the repository's own Python code (off by default).
        revision: hub revision.

    Returns:
        A `transformers` tokenizer.
    """
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path, revision)
    try:
        tok = AutoTokenizer.from_pretrained(
            path, trust_remote_code=trust_remote_code, revision=revision
        )
    except (OSError, ValueError) as exc:
        raise NudgekitError(f"tokenizer {str(name_or_path)!r}: {_first_line(exc)}") from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise NudgekitError(
                f"tokenizer {str(name_or_path)!r}: has neither a pad nor an eos token"
            )
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(
    name_or_path: str | os.PathLike,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> Any:
    """Load a causal LM from safetensors, move it to `device` and put it in eval mode.

    Args:
        name_or_path: local directory, hub id or `zoo:<name>`.
        dtype: "float32" | "bfloat16" | "float16" (short forms allowed) | "auto".
        device: torch device string ("cpu", "cuda", "cuda:1").
        trust_remote_code: allow the repository's own Python code (off by default).
        revision: hub revision.

    Returns:
        A `transformers` `PreTrainedModel` in eval mode.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = parse_dtype(dtype)
    check_device(device)
    path = resolve_model_path(name_or_path, revision)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            revision=revision,
        )
    except (OSError, ValueError) as exc:
        raise NudgekitError(f"model {str(name_or_path)!r}: {_first_line(exc)}") from None
    return model.to(device).eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
