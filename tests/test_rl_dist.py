"""Process and device discipline (`nudgekit.rl.dist`): ranks, device and the world-of-one env.

The decisions are pure functions over hand-built env dicts; one subprocess test runs
`run.py experiment=nurl_qwen` in a single process without the torchrun env (DeepSpeed ZeRO-2 on
CPU, a local tiny model, hf engine) through distributed init and 2 training steps.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nudgekit.rl import dist

TORCHRUN = {
    "RANK": "5",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "8",
    "MASTER_ADDR": "node0",
    "MASTER_PORT": "29400",
}


def test_ranks_without_torchrun_env_is_a_world_of_one():
    assert dist.ranks({}) == (0, 0, 1)
    assert dist.ranks({"RANK": "3"}) == (0, 0, 1)  # partial env: not a launch
    assert not dist.launched({"RANK": "3"})


def test_ranks_from_torchrun_env():
    assert dist.ranks(TORCHRUN) == (5, 1, 8)
    assert dist.launched(TORCHRUN)


@pytest.mark.parametrize(
    ("want", "local_rank", "cuda", "world", "expected"),
    [
        ("cpu", 3, True, 8, "cpu"),
        ("auto", 3, True, 8, "cuda:3"),
        ("auto", 3, False, 8, "cpu"),
        ("cuda", 2, True, 8, "cuda:2"),
        ("cuda", 0, True, 1, "cuda:0"),
        ("cuda:0", 4, True, 8, "cuda:4"),  # a one-GPU config under torchrun: the rank's GPU
        ("cuda:1", 0, True, 1, "cuda:1"),  # one process: an explicit index is kept
        ("cuda", 0, False, 1, "cuda"),  # left for the loader's one-line error
        (None, 0, False, 1, "cpu"),
    ],
)
def test_choose_device(want, local_rank, cuda, world, expected):
    assert dist.choose_device(want, local_rank, cuda, world) == expected


def test_process_info_under_torchrun_and_alone():
    info = dist.process_info(TORCHRUN, "cuda", cuda_available=True)
    assert (info.rank, info.local_rank, info.world_size, info.device) == (5, 1, 8, "cuda:1")
    assert info.launched and not info.is_main
    alone = dist.process_info({}, "auto", cuda_available=False)
    assert (alone.rank, alone.world_size, alone.device, alone.launched) == (0, 1, "cpu", False)
    assert alone.is_main


def test_single_process_env_fills_only_absent_keys():
    env = dist.single_process_env({}, port=12345)
    assert env == {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "12345",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    assert "MASTER_PORT" not in dist.single_process_env({"MASTER_PORT": "7"}, port=1)
    assert dist.single_process_env(TORCHRUN, port=1) == {}  # torchrun's env is never overridden
    partial = {k: v for k, v in TORCHRUN.items() if k != "MASTER_ADDR"}
    assert dist.single_process_env(partial, port=1) == {"MASTER_ADDR": "127.0.0.1"}


def test_fill_single_process_env_sets_a_free_port():
    env: dict[str, str] = {}
    added = dist.fill_single_process_env(env)
    assert env == added and env["WORLD_SIZE"] == "1" and int(env["MASTER_PORT"]) > 0


def test_setup_process_on_cpu():
    info = dist.setup_process("cpu", env={})
    assert info.device == "cpu" and info.world_size == 1


def test_on_device_replaces_the_spec_device():
    from nudgekit.models import ModelSpec

    spec = ModelSpec("zoo:x", device="cuda")
    moved = dist.on_device(spec, "cuda:3")
    assert moved.device == "cuda:3" and spec.device == "cuda" and moved.name_or_path == "zoo:x"
    assert dist.on_device(spec, "cuda") is spec
    assert dist.on_device(object(), "cpu") is not None  # not a dataclass: unchanged

    @dataclasses.dataclass
    class NoDevice:
        name: str

    plain = NoDevice("a")
    assert dist.on_device(plain, "cuda:1") is plain


def test_update_batches_move_to_the_backend_device():
    from nudgekit.rl.rollouts import RolloutBatch, to_device

    batch = RolloutBatch(
        torch.zeros(1, 3, dtype=torch.long),
        torch.ones(1, 3, dtype=torch.long),
        1,
        torch.zeros(1, 2, dtype=torch.long),
        torch.ones(1, 2),
        torch.zeros(1),
        torch.zeros(1, 2),
    )
    moved = to_device(batch, torch.device("meta"))
    assert moved.input_ids.device.type == "meta" and moved.prompt_width == 1
    assert moved.old_logprobs is None


# ---------------------------------------------------------------- nurl_qwen without torchrun

ROOT = Path(__file__).resolve().parents[1]
NO_TORCHRUN = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize(
    ("overrides", "target"),
    [
        ([], "nudgekit.nurl.NuRLSchedule"),
        (["pipeline=hints", "pipeline.problems=${train_data}"], "nudgekit.nurl.HintsPipeline"),
        (["hints=file", "hints.path=hints.jsonl"], "nudgekit.nurl.NuRLSchedule"),
    ],
    ids=["train", "collect-hints", "reuse-hints"],
)
def test_nurl_qwen_workflows_compose_and_bind(overrides, target):
    """The commands in nurl_qwen.yaml's header: train, collect hints, train on a hints file."""
    from helpers.config import compose_cfg

    from nudgekit.runtime import validate_targets

    cfg = compose_cfg(["experiment=nurl_qwen", *overrides], tiny=False, hydra=True)
    node = cfg.pipeline.schedule if "schedule" in cfg.pipeline else cfg.pipeline
    assert node._target_ == target
    assert validate_targets(cfg) == []
    if target == "nudgekit.nurl.HintsPipeline":
        assert cfg.pipeline.problems.source == "hiyouga/math12k"
        # the starting policy writes the hints through a vLLM engine built for the collection
        assert cfg.pipeline.source._target_ == "nudgekit.nurl.SelfHints"
        assert cfg.pipeline.source.engine._target_ == "nudgekit.engines.vllm.vllm_factory"
    else:
        assert cfg.trainer.deepspeed.zero_stage == 2
        assert cfg.pipeline.engine._target_ == "nudgekit.rl.rollout_engine.vllm_rollouts"
    if "hints=file" in overrides:
        assert cfg.hints._target_ == "nudgekit.nurl.FileHints"


def _plain_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NO_TORCHRUN}
    return {**env, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_deepspeed_backend_in_one_process_without_torchrun_env():
    """DeepSpeed's init gets a world of one from the env (no MPI lookup, no mpi4py needed)."""
    code = (
        "import torch\n"
        "from nudgekit.rl.backends import DeepSpeedBackend\n"
        "b = DeepSpeedBackend(zero_stage=2)\n"
        "b.setup(torch.nn.Linear(4, 2), lambda p: torch.optim.SGD(p, lr=0.1), None, 1, 2)\n"
        "assert (b.rank, b.world_size, b.device.type) == (0, 1, 'cpu')\n"
        "assert b.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]\n"
        "print('OK')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=_plain_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "mpi4py" not in proc.stderr


# ~20 s on 2 shared cores (DeepSpeed import, 2 NuRL steps, checkpoints): the acceptance run
def test_nurl_qwen_trains_two_steps_in_one_process(tiny_qwen_dir, tmp_path):
    """`python run.py experiment=nurl_qwen` without torchrun: ZeRO-2 on CPU, local model, hf
    engine, 1 stage-1 step + 1 stage-2 step."""
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "run.py",
        "experiment=nurl_qwen",
        f"model.name_or_path={tiny_qwen_dir}",
        "model.dtype=float32",
        "model.device=cpu",
        "engine=hf",  # nurl_qwen's default is vLLM rollouts
        "logger=disabled",
        "data=tiny",
        "hints=oracle",
        "~train_data",
        "+train_data={_target_: nudgekit.zoo.tiny_problems, split: train, level: medium, n: 16,"
        " seed: 0}",
        "budget.steps=1",
        "budget.samples=2",
        "budget.max_new_tokens=8",
        "budget.problems=4",
        "pipeline.prompts_per_step=2",
        "pipeline.update.micro_batch_size=2",
        "pipeline.update.mini_batches=1",
        "pipeline.validation.every=0",
        "pipeline.schedule.filter_n=2",
        "pipeline.checkpoint.every=0",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(
        cmd, env=_plain_env(), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / "step-000002" / "deepspeed").is_dir()
    assert "mpi4py" not in proc.stderr
