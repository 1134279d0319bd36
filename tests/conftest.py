"""Shared pytest fixtures: tiny random-init HF checkpoints written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from nudgekit.models.random_init import build_tiny_model


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer Qwen2 (hidden 32) + byte-level BPE tokenizer with a chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", arch="qwen2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer Llama whose tokenizer has *no* chat template (plain fallback)."""
    return build_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny-llama", arch="llama", chat_template=False, seed=1
    )


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared box threads contend badly.

    Use per module with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def hint_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The NuRL test policy (`helpers.nurl.build_hint_model`): hints turn problem A right."""
    from helpers.nurl import build_hint_model

    return build_hint_model(tmp_path_factory.mktemp("nurl") / "hint-model")
