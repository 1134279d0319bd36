"""Secret redaction for everything the tracker writes.

Secrets (API keys, W&B keys, hub tokens) come from the environment (DESIGN §7) and must never
reach a log file, a W&B run or a config dump. Two independent nets catch them:

1. **By key name** (`is_secret_key`): a config value whose key looks like a credential is
   replaced by ``"***"``. The rule is deliberately word-based, because this framework is full of
   harmless keys that merely *contain* ``token`` or ``key`` (``max_new_tokens``, ``tokenizer``,
   ``pad_token``, ``answer_key``). A key is secret when, split into lower-case words on
   ``_ - .`` and camelCase,

   - it contains a word from `SECRET_WORDS` (``secret``, ``password``, ``apikey``, ...), or
     the words ``api`` + ``key`` in a row; or
   - it is exactly ``key``, ``token`` or ``auth``; or
   - it ends in ``key`` / ``token`` and a preceding word is credential-like
     (`CREDENTIAL_PREFIXES`: ``hf``, ``wandb``, ``access``, ``auth``, ``openai``, ...); or
   - it ends in ``token`` and the word before is not a tokenizer special-token name
     (`SPECIAL_TOKEN_WORDS`: ``pad``, ``eos``, ``bos``, ...). ``github_token`` is therefore
     secret while ``pad_token`` is not; ``answer_key`` and ``max_key`` are not.

2. **By value** (`secret_values` + `scrub`): the values of environment variables that are
   credentials (``WANDB_API_KEY``, ``OPENAI_API_KEY``, ``HF_TOKEN``, ... and any variable whose
   *name* passes the rule above) are replaced by ``"***"`` wherever they occur inside any string,
   whatever its key, e.g. a base URL with an embedded key or a command line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"

# Env vars that always hold credentials, whatever the naming rule says.
SECRET_ENV_VARS = (
    "WANDB_API_KEY",
    "OPENAI_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_TOKEN",
    "ANTHROPIC_API_KEY",
)

SECRET_WORDS = frozenset(
    "secret secrets password passwd passphrase apikey credential credentials privatekey".split()
)
CREDENTIAL_PREFIXES = frozenset(
    """hf hub huggingface wandb openai anthropic github gh gitlab access auth bearer refresh
    session private client service signing encryption license slack aws azure gcp""".split()
)
SPECIAL_TOKEN_WORDS = frozenset(
    """pad eos bos unk sep cls mask stop start end im special think answer hint split boundary
    word chat sentinel additional new max min num first last next""".split()
)

# Shorter env values ("1", "true") would redact innocent text everywhere.
_MIN_SECRET_LEN = 8
_WORD_SPLIT = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")


def _words(key: str) -> list[str]:
    return [w.lower() for w in _WORD_SPLIT.split(key) if w]


def is_secret_key(key: object) -> bool:
    """Whether a config key names a credential (rule in the module docstring).

    Args:
        key: a mapping key; non-strings are never secret.

    Returns:
        True when the value under this key must be redacted.
    """
    if not isinstance(key, str):
        return False
    words = _words(key)
    if not words:
        return False
    if any(w in SECRET_WORDS for w in words):
        return True
    if any(a == "api" and b == "key" for a, b in zip(words, words[1:])):
        return True
    if len(words) == 1:
        return words[0] in {"key", "token", "auth"}
    last, before = words[-1], words[:-1]
    if last not in {"key", "token"}:
        return False
    if any(w in CREDENTIAL_PREFIXES for w in before):
        return True
    return last == "token" and before[-1] not in SPECIAL_TOKEN_WORDS


def secret_values(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The credential values currently in the environment, longest first.

    Args:
        environ: the environment to read (defaults to `os.environ`).

    Returns:
        Values of `SECRET_ENV_VARS` and of every variable whose name `is_secret_key`, skipping
        values shorter than 8 characters. Longest first so that a secret containing another is
        replaced whole.
    """
    env = os.environ if environ is None else environ
    found = {
        value
        for name, value in env.items()
        if (name in SECRET_ENV_VARS or is_secret_key(name)) and len(value) >= _MIN_SECRET_LEN
    }
    return tuple(sorted(found, key=len, reverse=True))


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """Replace every occurrence of a secret value inside strings, recursively.

    Args:
        value: a JSON-like value (dicts, lists, tuples, strings, scalars).
        secrets: secret strings to remove (see `secret_values`).

    Returns:
        A copy with each secret substring replaced by ``"***"``; non-strings are returned as is.
    """
    secrets = tuple(secrets)
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value


def redact(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict:
    """Return a copy of a (nested) config with credentials replaced by ``"***"``.

    Args:
        config: a plain nested mapping (convert an OmegaConf config to a container first).
        environ: the environment whose credential values are scrubbed (default `os.environ`).

    Returns:
        A new dict: values under secret-looking keys (`is_secret_key`) become ``"***"``, and any
        credential value from the environment is removed from every string. The input is not
        modified.
    """
    return scrub(_redact_keys(config), secret_values(environ))


def _redact_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if is_secret_key(k) and value[k] is not None else _redact_keys(value[k]))
            for k in value
        }
    if isinstance(value, (list, tuple)):
        return [_redact_keys(v) for v in value]
    return value


def redact_argv(argv: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """Redact credentials from a command line (W&B records ``sys.argv`` in its run metadata).

    Handles Hydra overrides and ``--flag=value`` (``tracking.api_key=X`` -> ``tracking.api_key=***``),
    ``--flag value`` pairs, and credential values from the environment anywhere in an argument.

    Args:
        argv: the arguments, without the program name.
        environ: the environment whose credential values are scrubbed (default `os.environ`).

    Returns:
        The redacted arguments.
    """
    secrets = secret_values(environ)
    out: list[str] = []
    redact_next = False
    for arg in argv:
        if redact_next and not arg.startswith("-"):
            out.append(REDACTED)
            redact_next = False
            continue
        redact_next = False
        name, eq, _ = arg.partition("=")
        # "+a.b.api_key" / "--api-key" / "~x.token": the last dotted part names the value.
        last = name.lstrip("+~-").rsplit(".", 1)[-1]
        if eq and is_secret_key(last):
            out.append(f"{name}={REDACTED}")
        else:
            redact_next = not eq and arg.startswith("--") and is_secret_key(last)
            out.append(scrub(arg, secrets))
    return out
