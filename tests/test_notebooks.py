"""The notebooks: committed with stripped outputs, and executed by a real Jupyter kernel (the
`python3` kernelspec, which must resolve to this interpreter) on `debug=tiny` runs made here:
`nurl_tiny`, `nurl_tiny_eval` and a two-gamma `nudging_tiny` sweep.

The runs are made twice over: in process through `nudgekit.cli.run` (fast, every `make test`)
and, marked slow, through `run.py` subprocesses with the gamma values as a Hydra multirun (the
notebook then finds the sweep from the run alone)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from helpers.config import compose_cfg
from helpers.nudging import model_dirs
from nbclient import NotebookClient

from nudgekit.eval import anatomy
from nudgekit.eval.runs import read_config, read_jsonl, read_summary

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "python3"


def test_the_two_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"nurl_upper_bound.ipynb", "nudging_anatomy.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_stripped_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert nb.metadata.kernelspec.name == KERNEL


def execute(nb: nbformat.NotebookNode, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Run every cell in a fresh `python3` kernel started in `notebooks/` (raises on an error)."""
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        client = NotebookClient(
            nb,
            kernel_name=KERNEL,
            timeout=300,
            resources={"metadata": {"path": str(ROOT / "notebooks")}},
        )
        return client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def texts(nb: nbformat.NotebookNode) -> str:
    return "\n".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )


def images(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


def test_the_python3_kernel_is_this_interpreter():
    """In a fresh clone the `python3` kernelspec must start this venv's Python (with nudgekit)."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import sys, nudgekit; print(sys.prefix)")]
    )
    assert texts(execute(nb)).strip() == sys.prefix


NURL = ["experiment=nurl_tiny", "debug=tiny", "budget.steps=1", "hints=oracle"]
EVAL = ["experiment=nurl_tiny_eval", "debug=tiny"]


def nudging_args(pair: dict[str, Path]) -> list[str]:
    """`nudging_tiny debug=tiny` on the word-writing test pair (tests/helpers/nudging.py): the
    zoo's `@test` nudger writes only whitespace, which would leave nothing to dissect."""
    return [
        "experiment=nudging_tiny",
        "debug=tiny",
        f"model.name_or_path={pair['base']}",
        f"pipeline.nudging.name_or_path={pair['small']}",
        "pipeline.aligned_large=null",
        "pipeline.baselines=[base_only]",
        "budget.max_new_tokens=16",
        "decoder.chunk_tokens=8",
    ]


@pytest.fixture(scope="module")
def inprocess_runs(tmp_path_factory) -> dict[str, Path]:
    """The runs the notebooks read, made in this process by `nudgekit.cli.run`."""
    from nudgekit.cli import run

    root = tmp_path_factory.mktemp("notebook_runs_inprocess")
    pair = model_dirs(tmp_path_factory)
    jobs = {
        "nurl": NURL,
        "eval": EVAL,
        "sweep/0": [*nudging_args(pair), "decoder.gamma=0.3"],
        "sweep/1": [*nudging_args(pair), "decoder.gamma=0.7"],
    }
    for name, overrides in jobs.items():
        run(compose_cfg(overrides, tiny=False, output_dir=root / name))
    return {
        "nurl": root / "nurl",
        "eval": root / "eval",
        "sweep": root / "sweep",
        "sweep_env": str(root / "sweep"),
    }


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, Path]:
    """The same runs launched side by side through `run.py`, the sweep as a Hydra multirun."""
    root = tmp_path_factory.mktemp("notebook_runs_cli")
    pair = model_dirs(tmp_path_factory)
    jobs = {
        "nurl": [*NURL, f"hydra.run.dir={root / 'nurl'}"],
        "eval": [*EVAL, f"hydra.run.dir={root / 'eval'}"],
        "sweep": [
            "-m",
            *nudging_args(pair),
            "decoder.gamma=0.3,0.7",
            f"hydra.sweep.dir={root / 'sweep'}",
        ],
    }
    env = {
        **os.environ,
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "run.py", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in jobs.items()
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, (name, err[-3000:])
    return {**{name: root / name for name in jobs}, "sweep_env": ""}


RUNS = ["inprocess_runs", pytest.param("cli_runs", marks=pytest.mark.slow)]


@pytest.mark.parametrize("runs", RUNS)
def test_nurl_upper_bound_notebook(runs, request):
    debug_runs = request.getfixturevalue(runs)
    nb = execute(
        nbformat.read(ROOT / "notebooks" / "nurl_upper_bound.ipynb", as_version=4),
        {
            "NUDGEKIT_EVAL_RUNS": str(debug_runs["eval"]),
            "NUDGEKIT_NURL_RUN": str(debug_runs["nurl"]),
        },
    )
    out = texts(nb)
    assert images(nb) >= 3
    summary = read_summary(debug_runs["eval"])
    ks = [k.rsplit("@", 1)[1] for k in summary if k.startswith("eval/pass@")]
    assert "| run | " + " | ".join(f"pass@{k}" for k in ks) + " |" in out
    assert f"| {summary['eval/pass@1']:.3f} |" in out
    decisions = read_jsonl(debug_runs["nurl"] / "tables" / "nurl_hint_decisions.jsonl")
    assert f"{len(decisions)} gate decisions" in out and decisions
    hinted = sum(r["status"] == "hinted" for r in decisions)
    assert f"| hinted_groups | {hinted:.3f} |" in out
    assert re.search(r"\| 2 \| \d+\.000 \| \d+\.000 \| [01]\.\d{3} \| [01]\.\d{3} \|", out)


@pytest.mark.parametrize("runs", RUNS)
def test_nudging_anatomy_notebook(runs, request):
    debug_runs = request.getfixturevalue(runs)
    sweep = debug_runs["sweep"]
    # in process: the sweep named by folder; through run.py: found from the run's multirun
    nb = execute(
        nbformat.read(ROOT / "notebooks" / "nudging_anatomy.ipynb", as_version=4),
        {
            "NUDGEKIT_NUDGING_RUN": str(sweep / "0"),
            "NUDGEKIT_NUDGING_RUNS": debug_runs["sweep_env"],
        },
    )
    out = texts(nb)
    assert images(nb) >= 2
    ws = anatomy.all_words(read_jsonl(sweep / "0" / "nudging.jsonl"))
    assert ws and any(w["source"] == "nudge" for w in ws)
    assert f"4 items, {len(ws)} words" in out
    for row in anatomy.by_type(ws):
        assert f"| {row['type']} | {row['words']} | {row['nudged']} |" in out
    for job in ("0", "1"):
        config, summary = read_config(sweep / job), read_summary(sweep / job)
        gamma = config["decoder"]["gamma"]
        share = summary["nudging/nudge_token_share"]
        assert f"| {gamma:.3f} | {summary['nudging/accuracy']:.3f} | {share:.3f} |" in out
    listed = out.split("gamma sweep:", 1)[1].split("|", 1)[0]
    assert str(sweep / "0") in listed and str(sweep / "1") in listed
