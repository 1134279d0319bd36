"""nudgekit: NuRL (train-time hint nudging for GRPO) and Nudging (inference-time model
collaboration) under one Hydra-driven roof. See DESIGN.md-style overview in README.md."""

from nudgekit.errors import NudgekitError

__version__ = "0.1.0"
__all__ = ["NudgekitError", "__version__"]
