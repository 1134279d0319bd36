"""`ModelSpec`: the config-side description of one model (what Hydra instantiates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nudgekit.models.loading import load_model, load_tokenizer


@dataclass
class ModelSpec:
    """Where a model lives and how to load it.

    Built from config with `_target_: nudgekit.models.ModelSpec`; nothing is loaded until
    `load_model()` / `load_tokenizer()` is called.

    Args:
        name_or_path: hub id, local HF directory, `zoo:<name>` (tiny-world model) or
            `pkg:<distribution>` (GGUF weights in a pip package, converted once).
        dtype: "float32" | "bfloat16" | "float16" | "auto".
        device: torch device string.
        trust_remote_code: run the repository's own Python code (off by default).
        revision: hub revision (branch, tag or commit).
    """

    name_or_path: str
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    revision: str | None = None

    def load_model(self) -> Any:
        """Load the model (safetensors only), on `device`, in eval mode."""
        return load_model(
            self.name_or_path,
            dtype=self.dtype,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            revision=self.revision,
        )

    def load_tokenizer(self) -> Any:
        """Load the tokenizer with a pad token and left padding."""
        return load_tokenizer(
            self.name_or_path, trust_remote_code=self.trust_remote_code, revision=self.revision
        )
