"""Credential redaction and value conversion (pure functions; no W&B)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nudgekit.tracking import redact, redact_argv, to_jsonable
from nudgekit.tracking.redact import REDACTED, is_secret_key, scrub, secret_values
from nudgekit.tracking.values import to_wandb

SECRET_KEYS = [
    "api_key",
    "apikey",
    "apiKey",
    "OPENAI_API_KEY",
    "wandb_key",
    "hf_token",
    "HF_TOKEN",
    "access_token",
    "github_token",
    "token",
    "key",
    "password",
    "db-password",
    "client_secret",
    "secret_key",
    "aws.secret",
    "credentials",
]
HARMLESS_KEYS = [
    "max_new_tokens",
    "max_tokens",
    "tokenizer",
    "tokenizer_name",
    "pad_token",
    "eos_token",
    "pad_token_id",
    "im_start_token",
    "answer_key",
    "max_key",
    "sort_key",
    "keys",
    "monkey",
    "TOKENIZERS_PARALLELISM",
    "num_tokens",
    "lr",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_key_names_are_recognised(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", HARMLESS_KEYS)
def test_ordinary_key_names_are_left_alone(key: str) -> None:
    assert not is_secret_key(key)


def test_non_string_keys_are_never_secret() -> None:
    assert not is_secret_key(3)
    assert not is_secret_key(None)


def test_redact_nested_config_by_key_and_keeps_everything_else() -> None:
    config = {
        "seed": 1,
        "tracking": {"mode": "offline", "api_key": "abc123456789", "project": "p"},
        "engine": {"openai": {"base_url": "http://127.0.0.1:8000/v1", "apiKey": "sk-zzz"}},
        "model": {"max_new_tokens": 64, "pad_token": "<pad>", "hf_token": None},
        "rewards": [{"name": "math", "token": "t0k3n-value"}],
    }
    out = redact(config, environ={})
    assert out["tracking"] == {"mode": "offline", "api_key": REDACTED, "project": "p"}
    assert out["engine"]["openai"] == {"base_url": "http://127.0.0.1:8000/v1", "apiKey": REDACTED}
    # An unset credential stays visibly unset: null is not a leak and is useful to see.
    assert out["model"] == {"max_new_tokens": 64, "pad_token": "<pad>", "hf_token": None}
    assert out["rewards"] == [{"name": "math", "token": REDACTED}]
    assert config["tracking"]["api_key"] == "abc123456789", "input must not be modified"


def test_redact_scrubs_env_secret_values_anywhere() -> None:
    env = {
        "WANDB_API_KEY": "wk-0123456789abcdef",
        "MY_SERVICE_TOKEN": "svc-token-999999",
        "PATH": "/usr/bin:/bin",  # not a credential: its value must survive
        "HF_TOKEN": "short",  # < 8 chars: too short to scrub safely
    }
    config = {
        "note": "launched with key wk-0123456789abcdef by me",
        "url": "https://x:svc-token-999999@host/api",
        "list": ["wk-0123456789abcdef", 3],
        "paths": "/usr/bin:/bin",
        "word": "short",
    }
    out = redact(config, environ=env)
    assert out["note"] == f"launched with key {REDACTED} by me"
    assert out["url"] == f"https://x:{REDACTED}@host/api"
    assert out["list"] == [REDACTED, 3]
    assert out["paths"] == "/usr/bin:/bin"
    assert out["word"] == "short"


def test_secret_values_longest_first_so_nested_secrets_vanish_whole() -> None:
    env = {"OPENAI_API_KEY": "abcdefgh", "WANDB_API_KEY": "abcdefgh-ijklmnop"}
    assert secret_values(env) == ("abcdefgh-ijklmnop", "abcdefgh")
    assert scrub("k=abcdefgh-ijklmnop", secret_values(env)) == f"k={REDACTED}"


def test_redact_argv_handles_overrides_flags_and_env_values() -> None:
    env = {"HF_TOKEN": "hf_sekrit_value_1"}
    argv = [
        "experiment=nurl_tiny",
        "tracking.api_key=abc",
        "+engine.openai.api_key=def",
        "--api-key",
        "ghi",
        "--wandb-key=jkl",
        "model.max_new_tokens=64",
        "--hub-url=https://u:hf_sekrit_value_1@host",
    ]
    assert redact_argv(argv, environ=env) == [
        "experiment=nurl_tiny",
        f"tracking.api_key={REDACTED}",
        f"+engine.openai.api_key={REDACTED}",
        "--api-key",
        REDACTED,
        f"--wandb-key={REDACTED}",
        "model.max_new_tokens=64",
        f"--hub-url=https://u:{REDACTED}@host",
    ]


def test_to_jsonable_converts_tensors_numpy_and_odd_values() -> None:
    value = {
        "t0": torch.tensor(0.25, requires_grad=True),
        "bf16": torch.tensor(2.5, dtype=torch.bfloat16),
        "vec": torch.tensor([1, 2, 3]),
        "f32": np.float32(0.5),
        "i64": np.int64(7),
        "b": np.bool_(True),
        "arr": np.arange(3),
        "nan": float("nan"),
        "inf": torch.tensor(float("inf")),
        "path": Path("/a/b"),
        "nested": {1: (1, 2)},
        "none": None,
    }
    out = to_jsonable(value)
    assert out == {
        "t0": 0.25,
        "bf16": 2.5,
        "vec": [1, 2, 3],
        "f32": 0.5,
        "i64": 7,
        "b": True,
        "arr": [0, 1, 2],
        "nan": None,
        "inf": None,
        "path": "/a/b",
        "nested": {"1": [1, 2]},
        "none": None,
    }
    assert type(out["i64"]) is int and type(out["f32"]) is float


def test_to_wandb_keeps_non_finite_floats() -> None:
    out = to_wandb({"loss": torch.tensor(float("nan")), "x": np.float64(1.5)})
    assert math.isnan(out["loss"]) and out["x"] == 1.5
