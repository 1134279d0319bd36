"""Issue 19 parts 1, 4, 7 through the real entry point: secrets never reach a run dir or the
terminal, one run per run dir, and bad input is one line with exit code 2 (never a traceback).

Subprocess runs of `run.py` where the CLI's behaviour is the point (each costs a few seconds of
imports, so one run carries several asserts); in-process calls otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers.cli import assert_one_line_error
from helpers.cli import run_py as run_cli
from helpers.config import compose_cfg

from nudgekit import rundir
from nudgekit.data import load_problems
from nudgekit.errors import NudgekitError
from nudgekit.rundir import LOCK_NAME, lock_run_dir, locked_run_dir, unlock_run_dir
from nudgekit.tracking.hydra_files import redact_or_remove
from nudgekit.tracking.redact import REDACTED, is_secret_key, redact, redact_argv

ROOT = Path(__file__).resolve().parents[1]

# Distinctive values: each must appear nowhere in a run dir, on stdout or on stderr.
ENV_SECRET = "envsecret-HF-7d3e9a1c"  # in HF_TOKEN, and in tags
ENV_OPENAI = "envsecret-OAI-5b2f8c0d"  # in OPENAI_API_KEY, inside a harmless override
CLI_SECRETS = {
    "+x.auth_header": "clisecret-AUTH-11aa",
    "+x.bearer": "clisecret-BEARER-22bb",
    "+x.hf_tok": "clisecret-HFTOK-33cc",
    "+x.api_key": "clisecret-APIKEY-44dd",  # also in tags
}
CONFIG_SECRET = "cfgsecret-PASSWD-55ee"  # under creds.passwd in a config file
CONFIG_COOKIE = "cfgsecret-COOKIE-66ff"  # under creds.cookie in a config file
ALL_SECRETS = [ENV_SECRET, ENV_OPENAI, *CLI_SECRETS.values(), CONFIG_SECRET, CONFIG_COOKIE]


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under `root` (binary ones too: W&B's .wandb protobuf) that contains `secret`."""
    needle = secret.encode()
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


# -- 1. secrets on disk ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One real W&B-offline eval run fed secrets by env, CLI, tags and a config file."""
    tmp = tmp_path_factory.mktemp("secret_run")
    conf = tmp / "conf" / "local"
    conf.mkdir(parents=True)
    (conf / "secrets.yaml").write_text(
        textwrap.dedent(f"""\
        # @package _global_
        creds:
          passwd: {CONFIG_SECRET}
          cookie: {CONFIG_COOKIE}
        """)
    )
    run_dir = tmp / "run"
    args = [
        f"--config-dir={tmp / 'conf'}",
        "local=secrets",
        "experiment=eval_tiny",
        "debug=tiny",
        "logger=wandb",
        "eval.k=[1,2]",
        f"tags=[t1,{ENV_SECRET},{CLI_SECRETS['+x.api_key']}]",
        f"+x.note=url-with-{ENV_OPENAI}-inside",
        *(f"{key}={value}" for key, value in CLI_SECRETS.items()),
        f"hydra.run.dir={run_dir}",
    ]
    out = run_cli(args, tmp, env={"HF_TOKEN": ENV_SECRET, "OPENAI_API_KEY": ENV_OPENAI})
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir, out


@pytest.mark.parametrize("secret", ALL_SECRETS)
def test_no_secret_anywhere_in_the_run_dir_or_output(secret_run, secret: str) -> None:
    run_dir, out = secret_run
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb")), "W&B offline run expected"
    assert (run_dir / ".hydra" / "hydra.yaml").is_file()
    assert files_holding(run_dir, secret) == []
    assert secret not in out.stdout + out.stderr


def test_hydra_files_are_redacted_but_keep_the_rest(secret_run) -> None:
    run_dir, _ = secret_run
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    for key in CLI_SECRETS:
        assert f"{key}={REDACTED}" in overrides
    assert "eval.k=[1,2]" in overrides and "experiment=eval_tiny" in overrides
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "auth_header: '***'" in config and "max_new_tokens:" in config
    hydra = (run_dir / ".hydra" / "hydra.yaml").read_text()
    assert f"+x.bearer={REDACTED}" in hydra  # in overrides.task and override_dirname
    assert "cookie: '***'" in (run_dir / "config.yaml").read_text()


def test_failing_job_prints_redacted_overrides_and_scrubbed_traceback(tmp_path) -> None:
    """A bug (not a user error): traceback and exit 1, but no secret in any line or file."""
    (tmp_path / "bugmod.py").write_text(
        "def explode(**kwargs):\n    raise RuntimeError(f\"boom: {kwargs['api_key']}\")\n"
    )
    secret = "clisecret-BUG-77gg"
    run_dir = tmp_path / "run"
    out = run_cli(
        [
            "experiment=eval_tiny",
            "debug=tiny",
            "pipeline._target_=bugmod.explode",
            f"+pipeline.api_key={secret}",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" in out.stderr and f"RuntimeError: boom: {REDACTED}" in out.stderr
    assert "Error executing job with overrides: " in out.stderr
    assert f"'+pipeline.api_key={REDACTED}'" in out.stderr
    assert secret not in out.stdout + out.stderr
    assert files_holding(run_dir, secret) == []
    assert "boom" in (run_dir / "run.log").read_text()  # the bug is logged, scrubbed


def test_multirun_job_dirs_are_redacted(tmp_path) -> None:
    secret = "clisecret-SWEEP-88hh"
    sweep = tmp_path / "sweep"
    out = run_cli(
        [
            "-m",
            "experiment=eval_tiny",
            "debug=tiny",
            "eval.k=[1,2]",
            f"+x.hf_tok={secret}",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (sweep / "0" / ".hydra" / "overrides.yaml").is_file()
    assert (sweep / "multirun.yaml").is_file()
    assert files_holding(sweep, secret) == []


def test_a_hydra_file_that_cannot_be_redacted_is_removed(tmp_path) -> None:
    broken = tmp_path / "overrides.yaml"
    broken.write_text("- +x.api_key=clisecret-BROKEN-10kk\n- [unclosed\n")
    redact_or_remove(broken, (), ["+x.api_key=clisecret-BROKEN-10kk"])
    assert not broken.exists()


@pytest.mark.parametrize(
    "key",
    [
        "auth_header",
        "bearer",
        "hf_tok",
        "authorization",
        "Authorization",
        "x_api_key",
        "X-Api-Key",
        "cookie",
        "passwd",
        "proxy_bearer_token",
        "session_cookie",
        "HF_TOK",
    ],
)
def test_more_credential_key_names(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "max_new_tokens",
        "tokenizer",
        "pad_token",
        "answer_key",
        "bos_token",
        "eos_tok",
        "max_tok",
        "header",
        "cache_header",
        "chunk_tokens",
        "tokens_per_step",
        "keys",
        "PWD",
    ],
)
def test_framework_keys_stay_visible(key: str) -> None:
    assert not is_secret_key(key)


def test_value_passed_under_a_secret_name_is_scrubbed_everywhere() -> None:
    value = "sk-abcdef123456"
    argv = [f"+engine.api_key={value}", f"tags=[a,{value}]", "eval.n=4"]
    assert redact_argv(argv, environ={}) == [
        f"+engine.api_key={REDACTED}",
        f"tags=[a,{REDACTED}]",
        "eval.n=4",
    ]
    config = {"engine": {"api_key": value}, "tags": ["a", value], "note": "short"}
    assert redact(config, environ={}) == {
        "engine": {"api_key": REDACTED},
        "tags": ["a", REDACTED],
        "note": "short",
    }


# -- 4. run-dir lock -------------------------------------------------------------------------


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run-dir lock (as a live run does), until killed."""
    code = (
        "import sys, time\nfrom nudgekit.rundir import lock_run_dir\n"
        f"lock_run_dir({str(run_dir)!r})\nprint('locked', flush=True)\ntime.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_into_a_busy_run_dir_is_one_line(tmp_path) -> None:
    """A second GRPO run into a live run's dir stops before it writes or resumes anything."""
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    try:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "overrides.yaml").write_text("- first run\n")
        out = run_cli(["experiment=grpo_tiny", "debug=tiny", f"hydra.run.dir={run_dir}"], tmp_path)
        assert_one_line_error(out, str(run_dir), f"pid {holder.pid}", "locked")
        assert (run_dir / ".hydra" / "overrides.yaml").read_text() == "- first run\n"
        assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


def test_in_process_run_into_a_busy_run_dir_exits_2(tmp_path, capsys) -> None:
    from nudgekit.cli import run

    holder = hold_lock(tmp_path)
    try:
        cfg = compose_cfg(["experiment=grpo_tiny"], output_dir=tmp_path)
        with pytest.raises(SystemExit) as info:
            run(cfg)
        assert info.value.code == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert not (tmp_path / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_run_leaves_no_stale_lock(tmp_path) -> None:
    holder = hold_lock(tmp_path)
    with pytest.raises(NudgekitError, match=f"pid {holder.pid}"):
        lock_run_dir(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    deadline = time.monotonic() + 5
    while True:  # the kernel drops a dead process's flock at once; allow for a slow reap
        try:
            assert lock_run_dir(tmp_path)
            break
        except NudgekitError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    unlock_run_dir(tmp_path)


def test_lock_is_reentrant_in_process_and_taken_by_rank_zero_only(tmp_path, monkeypatch) -> None:
    holder = hold_lock(tmp_path)
    try:
        monkeypatch.setenv("RANK", "1")  # torchrun's other ranks share rank 0's dir freely
        assert lock_run_dir(tmp_path) is False
        monkeypatch.delenv("RANK")
    finally:
        holder.kill()
        holder.wait()
    with locked_run_dir(tmp_path):
        with locked_run_dir(tmp_path):  # the Hydra callback, then cli.run: one lock
            pass
        assert os.path.realpath(tmp_path) in rundir._held  # the inner block kept it
    assert lock_run_dir(tmp_path)  # released on leaving the outer block
    unlock_run_dir(tmp_path)


# -- 7. tracebacks left ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["model=nope"], ["Could not find 'model/nope'", "(available: ", "tiny_policy"]),
        (["eval.nope=1"], ["Could not override 'eval.nope'", "+eval.nope=1"]),
        (["eval.n=[1"], ["cannot parse override 'eval.n=[1'"]),
        (["+x.api_key=[clisecret-PARSE-99ii"], ["cannot parse override '+x.api_key=***'"]),
    ],
    ids=["unknown-option", "unknown-key", "bad-syntax", "bad-syntax-secret"],
)
def test_hydra_config_errors_are_one_line_exit_2(tmp_path, args, needles) -> None:
    out = run_cli(["experiment=eval_tiny", *args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    line = assert_one_line_error(out, *needles)
    assert "clisecret" not in line


def bad_utf8_file(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        b'{"question": "1+1?", "answer": "#### 2"}\n'
        b'{"question": "caf\xe9 2+2?", "answer": "#### 4"}\n'
    )
    return path


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["experiment=eval_tiny", "eval.n=abc"], ["eval.n", "expected an integer", "'abc'"]),
        (
            ["experiment=nudging_tiny", "decoder.gamma=abc"],
            ["decoder.gamma", "expected a number", "'abc'"],
        ),
        (["model=local"], ["model.name_or_path is required"]),
        (["experiment=eval_tiny", "seed=abc"], ["seed", "expected an integer"]),
        (
            ["experiment=eval_tiny", "eval.n=${nope}", "+x.api_key=clisecret-INTERP-00jj"],
            ["Interpolation key 'nope' not found", "eval.n"],
        ),
        (
            ["experiment=eval_tiny", "data=gsm8k", "data.path=BAD_UTF8"],
            ["latin1.jsonl line 2", "not valid UTF-8", "0xE9"],
        ),
    ],
    ids=["eval.n", "decoder.gamma", "model-local", "seed", "interpolation", "non-utf8"],
)
def test_bad_values_are_one_line_exit_2(tmp_path, args, needles) -> None:
    args = [a.replace("BAD_UTF8", str(bad_utf8_file(tmp_path))) for a in args]
    out = run_cli([*args, "debug=tiny", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert_one_line_error(out, *needles)
    assert "Warning" not in out.stderr + out.stdout  # e.g. a RunGuard callback that failed
    assert files_holding(tmp_path / "run", "clisecret") == []


def test_non_utf8_row_names_file_and_line_in_process(tmp_path) -> None:
    with pytest.raises(NudgekitError, match=r"latin1\.jsonl line 2: not valid UTF-8"):
        load_problems(str(bad_utf8_file(tmp_path)))
