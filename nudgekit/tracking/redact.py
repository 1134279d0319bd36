"""Secret redaction for everything the tracker writes.

Secrets (API keys, W&B keys, hub tokens) come from the environment (DESIGN §7) and must never
reach a log file, a W&B run or a config dump. Two independent nets catch them:

1. **By key name** (`is_secret_key`): a config value whose key looks like a credential is
   replaced by ``"***"``. The rule is deliberately word-based, because this framework is full of
   harmless keys that merely *contain* ``token`` or ``key`` (``max_new_tokens``, ``tokenizer``,
   ``pad_token``, ``answer_key``). A key is secret when, split into lower-case words on
   ``_ - .`` and camelCase,

   - it contains a word from `SECRET_WORDS` (``secret``, ``password``, ``passwd``, ``apikey``,
     ``bearer``, ``authorization``, ``cookie``, ...), or the words ``api`` + ``key`` in a row
     (``x_api_key``); or
   - it is exactly ``key``, ``token``, ``tok`` or ``auth``; or
   - it ends in ``key`` / ``token`` / ``tok`` / ``header`` and a preceding word is
     credential-like (`CREDENTIAL_PREFIXES`: ``hf``, ``wandb``, ``access``, ``auth``,
     ``openai``, ...): ``hf_tok``, ``auth_header``; or
   - it ends in ``token`` / ``tok`` and the word before is not a tokenizer special-token name
     (`SPECIAL_TOKEN_WORDS`: ``pad``, ``eos``, ``bos``, ...). ``github_token`` is therefore
     secret while ``pad_token`` is not; ``answer_key``, ``max_key`` and ``cache_header`` are not.

2. **By value** (`secret_values` + `scrub`): the values of environment variables that are
   credentials (``WANDB_API_KEY``, ``OPENAI_API_KEY``, ``HF_TOKEN``, ... and any variable whose
   *name* passes the rule above) are replaced by ``"***"`` wherever they occur inside any string,
   whatever its key, e.g. a base URL with an embedded key or a command line. The values found
   under secret keys of a config (`config_secret_values`) or of a command line
   (`argv_secret_values`) are scrubbed the same way, so a key passed as
   ``+engine.api_key=K`` is also removed from ``tags=[K]`` or a URL.

Values shorter than 8 characters are only ever redacted by key, never scrubbed by value: ``"1"``
or ``"true"`` would otherwise vanish from every string.
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
    """secret secrets password passwd passphrase apikey credential credentials privatekey bearer
    authorization cookie cookies sessionid jwt""".split()
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
# Last words that name a credential when a credential-like word precedes them (`hf_tok`,
# `auth_header`); `tok` is the usual short form of `token`.
_CREDENTIAL_LAST_WORDS = frozenset({"key", "token", "tok", "header", "headers"})
_TOKEN_WORDS = frozenset({"token", "tok"})
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
        return words[0] in {"key", "token", "tok", "auth"}
    last, before = words[-1], words[:-1]
    if last not in _CREDENTIAL_LAST_WORDS:
        return False
    if any(w in CREDENTIAL_PREFIXES for w in before):
        return True
    return last in _TOKEN_WORDS and before[-1] not in SPECIAL_TOKEN_WORDS


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
    return longest_first(
        value for name, value in env.items() if name in SECRET_ENV_VARS or is_secret_key(name)
    )


def config_secret_values(config: Any) -> tuple[str, ...]:
    """The string values stored under secret keys anywhere in a nested config, longest first.

    Args:
        config: a plain nested mapping / list.

    Returns:
        Values of at least 8 characters found under keys that `is_secret_key`.
    """
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                if is_secret_key(k) and isinstance(v, str):
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(config)
    return longest_first(found)


def argv_secret_values(argv: Iterable[str]) -> tuple[str, ...]:
    """The values a command line passes under secret names, longest first.

    Args:
        argv: Hydra overrides (``+x.api_key=K``) and ``--flag=K`` / ``--flag K`` arguments.

    Returns:
        Those values (surrounding quotes removed) of at least 8 characters.
    """
    found: list[str] = []
    args = list(argv)
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not is_secret_key(_arg_name(name)):
            continue
        if eq:
            found += [value, _unquote(value)]
        elif arg.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            found.append(args[i + 1])
    return longest_first(found)


def longest_first(values: Iterable[str]) -> tuple[str, ...]:
    """Distinct values of at least 8 characters, longest first (the order `scrub` needs)."""
    found = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LEN}
    return tuple(sorted(found, key=len, reverse=True))


def _arg_name(name: str) -> str:
    # "+a.b.api_key" / "--api-key" / "~x.token": the last dotted part names the value.
    return name.lstrip("+~-").rsplit(".", 1)[-1]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


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
        credential value from the environment, or found under a secret key of the config, is
        removed from every string. The input is not modified.
    """
    secrets = longest_first(secret_values(environ) + config_secret_values(config))
    return scrub(_redact_keys(config), secrets)


def _redact_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if is_secret_key(k) and value[k] is not None else _redact_keys(value[k]))
            for k in value
        }
    if isinstance(value, (list, tuple)):
        return [_redact_keys(v) for v in value]
    return value


def redact_argv(
    argv: Iterable[str],
    environ: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> list[str]:
    """Redact credentials from a command line (W&B records ``sys.argv`` in its run metadata).

    Handles Hydra overrides and ``--flag=value`` (``tracking.api_key=X`` -> ``tracking.api_key=***``),
    ``--flag value`` pairs, and credential values (from the environment, from `secrets`, or
    passed under a secret name elsewhere on the line) anywhere in an argument.

    Args:
        argv: the arguments, without the program name.
        environ: the environment whose credential values are scrubbed (default `os.environ`).
        secrets: further values to scrub (e.g. those of a run's config).

    Returns:
        The redacted arguments.
    """
    argv = list(argv)
    values = longest_first((*secret_values(environ), *argv_secret_values(argv), *secrets))
    out: list[str] = []
    redact_next = False
    for arg in argv:
        if redact_next and not arg.startswith("-"):
            out.append(REDACTED)
            redact_next = False
            continue
        redact_next = False
        name, eq, _ = arg.partition("=")
        if eq and is_secret_key(_arg_name(name)):
            out.append(f"{name}={REDACTED}")
        else:
            redact_next = not eq and arg.startswith("--") and is_secret_key(_arg_name(name))
            out.append(scrub(arg, values))
    return out
