"""Hydra launcher presets (conf/hydra/launcher): SLURM/submitit-local/joblib compose, SLURM's task
variables map to torch-distributed ones (pure, hand-built envs), and real multiruns through
submitit's local executor and joblib reach their jobs with the exported env."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.config import compose_cfg
from omegaconf import OmegaConf

from nudgekit import cluster
from nudgekit.rl import dist

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TORCH_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the hydra_plugins namespace itself is absent
        return False


HAVE_PLUGINS = all(
    _importable(m)
    for m in (
        "submitit",
        "hydra_plugins.hydra_submitit_launcher",
        "hydra_plugins.hydra_joblib_launcher",
    )
)
needs_plugins = pytest.mark.skipif(not HAVE_PLUGINS, reason="pip install -e '.[launchers]'")


def hydra_cfg(overrides: list[str]):
    return compose_cfg(overrides, tiny=False, hydra=True).hydra


def slurm_task(**extra: str) -> dict[str, str]:
    """Task 9 of a 2-node x 8-task srun step (hand-built, like SLURM sets it)."""
    env = {
        "SLURM_JOB_ID": "123456",
        "SLURM_PROCID": "9",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "16",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "gpu[01-02]",
        "PATH": "/usr/bin",
    }
    env.update(extra)
    return env


# --- presets compose --------------------------------------------------------------------------


@needs_plugins
def test_submitit_slurm_preset_composes_with_one_task_per_gpu_and_the_env_callback():
    h = hydra_cfg(["experiment=grpo_tiny", "hydra/launcher=submitit_slurm"])
    launcher = h.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8
    assert launcher.partition is None and launcher.gpus_per_task is None
    assert h.callbacks.torch_env._target_ == "nudgekit.cluster.ExportTorchEnv"
    assert "run_guard" in h.callbacks  # the repo's own callback is kept

    h = hydra_cfg(
        [
            "experiment=grpo_tiny",
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.nodes=2",
        ]
    )
    assert (h.launcher.tasks_per_node, h.launcher.partition, h.launcher.nodes) == (4, "gpu", 2)


@needs_plugins
def test_slurm_preset_renders_a_real_sbatch_script(tmp_path, monkeypatch):
    """The preset's values go through submitit's own SlurmExecutor (only its `srun` probe is
    answered here: there is no cluster)."""
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))

    h = hydra_cfg(
        ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2"]
    )
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = OmegaConf.to_container(h.launcher, resolve=False)
    params["tasks_per_node"] = params["gpus_per_node"]  # ${.gpus_per_node}, resolved by Hydra
    params["name"] = "nurl"
    for key in ("_target_", "submitit_folder", "max_num_timeout"):  # the launcher's init keys
        params.pop(key)
    # what SlurmLauncher.launch does: generic keys as they are, the rest as slurm_<key>
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(
        **{k if k in generic else f"slurm_{k}": v for k, v in params.items()}
    )
    executor = executor._executor
    text = executor._make_submission_file_text("python -m x", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=240",
    ):
        assert line in text, (line, text)
    assert "srun" in text and "export SUBMITIT_EXECUTOR=slurm" in text


@needs_plugins
def test_local_and_joblib_presets_compose():
    h = hydra_cfg(["experiment=eval_tiny", "hydra/launcher=submitit_local"])
    assert h.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert h.callbacks.torch_env._target_ == "nudgekit.cluster.ExportTorchEnv"
    h = hydra_cfg(["experiment=eval_tiny", "hydra/launcher=joblib"])
    assert h.launcher._target_.endswith("joblib_launcher.JoblibLauncher")
    assert h.launcher.n_jobs == 2
    assert "torch_env" not in h.callbacks  # joblib jobs are separate runs, not ranks


@needs_plugins
def test_preset_composes_from_the_command_line():
    out = subprocess.run(
        [sys.executable, "run.py", "experiment=grpo_tiny", "hydra/launcher=submitit_slurm"]
        + ["hydra.launcher.partition=gpu", "--cfg", "hydra", "--package", "hydra.launcher"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    launcher = OmegaConf.create(out.stdout)  # the "# @package hydra.launcher" node
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 8


# --- SLURM -> torch env (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node7", ["node7"]),
        ("gpu[01-02]", ["gpu01", "gpu02"]),
        ("gpu[01-02],cpu5", ["gpu01", "gpu02", "cpu5"]),
        ("a-b[8-10,12]", ["a-b8", "a-b9", "a-b10", "a-b12"]),
        ("n[1-2]-ib[3,5]", ["n1-ib3", "n1-ib5", "n2-ib3", "n2-ib5"]),
        ("x[098-101]", ["x098", "x099", "x100", "x101"]),
        ("", []),
    ],
)
def test_expand_nodelist_matches_slurm_and_submitit(nodelist, hosts):
    assert cluster.expand_nodelist(nodelist) == hosts
    if nodelist and HAVE_PLUGINS:  # the same hosts as submitit's own parser
        from submitit.slurm.slurm import _parse_node_list

        assert cluster.expand_nodelist(nodelist) == _parse_node_list(nodelist)


def test_slurm_task_becomes_a_torch_rank():
    got = cluster.slurm_torch_env(slurm_task())
    assert got == {
        "RANK": "9",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "16",
        "LOCAL_WORLD_SIZE": "8",
        "MASTER_ADDR": "gpu01",
        "MASTER_PORT": str(cluster.job_port("123456")),
    }
    # every task of the job agrees on the address and port; another job gets another port
    other = cluster.slurm_torch_env(slurm_task(SLURM_PROCID="0", SLURM_LOCALID="0"))
    assert (other["MASTER_ADDR"], other["MASTER_PORT"]) == (got["MASTER_ADDR"], got["MASTER_PORT"])
    assert other["RANK"] == "0"
    assert (
        cluster.slurm_torch_env(slurm_task(SLURM_JOB_ID="123457"))["MASTER_PORT"]
        != got["MASTER_PORT"]
    )
    lo, hi = cluster.PORT_RANGE
    assert lo <= int(got["MASTER_PORT"]) < hi
    # the result is what nudgekit's rank decision reads
    info = dist.process_info({**slurm_task(), **got}, "cuda", cuda_available=True)
    assert (info.rank, info.local_rank, info.world_size, info.device) == (9, 1, 16, "cuda:1")


def test_slurm_mapping_keeps_what_is_set_and_stays_out_of_the_way():
    # an exported MASTER_PORT (or ADDR) is kept
    assert "MASTER_PORT" not in cluster.slurm_torch_env(slurm_task(MASTER_PORT="29500"))
    # torchrun inside the allocation (srun torchrun ...): its variables win, nothing exported
    assert cluster.slurm_torch_env(slurm_task(RANK="3", LOCAL_RANK="3", WORLD_SIZE="8")) == {}
    # an sbatch/salloc shell has no SLURM_PROCID/SLURM_LOCALID: not a task
    shell = {k: v for k, v in slurm_task().items() if k not in ("SLURM_PROCID", "SLURM_LOCALID")}
    assert cluster.slurm_torch_env(shell) == {}
    assert cluster.job_torch_env({"PATH": "/usr/bin"}) == {}
    # SLURM_NODELIST (older SLURM) and a missing node count
    env = slurm_task(SLURM_NODELIST="c[3-4]")
    del env["SLURM_JOB_NODELIST"], env["SLURM_JOB_NUM_NODES"]
    got = cluster.slurm_torch_env(env)
    assert (got["MASTER_ADDR"], got["LOCAL_WORLD_SIZE"]) == ("c3", "16")


def test_submitit_local_task_becomes_a_torch_rank():
    env = {
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_JOB_ID": "4242",
    }
    assert cluster.job_torch_env(env) == {
        "RANK": "1",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(cluster.job_port("4242")),
    }


def test_export_callback_sets_the_env(monkeypatch):
    for key in TORCH_KEYS:  # recorded by monkeypatch, so what the callback sets is undone
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    for key, value in slurm_task().items():
        monkeypatch.setenv(key, value)
    cluster.ExportTorchEnv().on_job_start(config=None)
    assert {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR")} == {
        "RANK": "9",
        "WORLD_SIZE": "16",
        "MASTER_ADDR": "gpu01",
    }


# --- real multiruns ---------------------------------------------------------------------------

# a Hydra app on nudgekit's conf/ whose job records the torch env it got (torch-free: fast jobs)
PROBE_APP = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import hydra
from hydra.core.hydra_config import HydraConfig
import nudgekit.config  # noqa: F401
from nudgekit import cluster
from nudgekit import cluster  # noqa: F401

@hydra.main(version_base="1.3", config_path={conf!r}, config_name="config")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    env = {{k: os.environ.get(k) for k in {keys!r}}}
    record = dict(env=env, seed=cfg.seed, pid=os.getpid())
    (out / f"rank{{env['RANK'] or 0}}.json").write_text(json.dumps(record))
    return float(cfg.seed)

main()
"""


def run_probe(tmp_path: Path, overrides: list[str], seeds: str = "0,1") -> Path:
    app = tmp_path / "probe_app.py"
    app.write_text(PROBE_APP.format(root=str(ROOT), conf=str(CONF), keys=TORCH_KEYS))
    sweep = tmp_path / "sweep"
    env = {
        k: v for k, v in os.environ.items() if k not in TORCH_KEYS and not k.startswith("SLURM_")
    }
    out = subprocess.run(
        [
            sys.executable,
            str(app),
            "-m",
            "logger=disabled",
            f"seed={seeds}",
            f"hydra.sweep.dir={sweep}",
        ]
        + overrides,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return sweep


@needs_plugins
def test_submitit_local_multirun_exports_the_torch_env_to_every_task(tmp_path):
    overrides = ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"]
    sweep = run_probe(tmp_path, overrides, seeds="3")
    records = [json.loads((sweep / "0" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, rec in enumerate(records):
        assert rec["env"]["RANK"] == rec["env"]["LOCAL_RANK"] == str(rank)
        assert rec["env"]["WORLD_SIZE"] == rec["env"]["LOCAL_WORLD_SIZE"] == "2"
        assert rec["env"]["MASTER_ADDR"] == "127.0.0.1"
        assert rec["seed"] == 3
    assert records[0]["pid"] != records[1]["pid"]  # two processes, one per task
    assert records[0]["env"]["MASTER_PORT"] == records[1]["env"]["MASTER_PORT"]


@needs_plugins
def test_joblib_multirun_runs_both_jobs_in_worker_processes(tmp_path):
    sweep = run_probe(tmp_path, ["hydra/launcher=joblib"])
    records = [json.loads((sweep / job / "rank0.json").read_text()) for job in ("0", "1")]
    assert [r["seed"] for r in records] == [0, 1]
    assert all(r["env"]["RANK"] is None for r in records)  # plain runs, not ranks
    assert os.getpid() not in {r["pid"] for r in records}


@needs_plugins
@pytest.mark.slow
def test_joblib_multirun_of_two_tiny_evals_finishes_with_both_results(tmp_path):
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [sys.executable, "run.py", "-m", "experiment=eval_tiny", "debug=tiny", "seed=0,1"]
        + ["hydra/launcher=joblib", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert "eval/pass@1" in json.dumps(summary)
        overrides = (sweep / job / ".hydra" / "overrides.yaml").read_text()
        assert f"seed={job}" in overrides
