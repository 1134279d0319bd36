"""The vLLM engine is import-guarded: without vLLM it fails with one actionable line."""

from __future__ import annotations

import importlib.util

import pytest

from nudgekit.engines import VLLMEngine
from nudgekit.errors import NudgekitError


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_missing_vllm_is_one_line_error():
    with pytest.raises(NudgekitError, match=r"pip install nudgekit\[vllm\]` and a GPU"):
        VLLMEngine("some/model")
