"""Unit tests of the GRPO trainer's parts: collate layout, sampler order, plateau, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from nudgekit.errors import NudgekitError
from nudgekit.rl import CheckpointManager, PlateauDetector, PromptSampler, Rollout, collate
from nudgekit.rl.checkpoint import rng_state, set_rng_state
from nudgekit.rl.rollouts import by_length, padded_tokens, split_batches


def _rollout(prompt, completion, reason="eos", adv=0.5):
    return Rollout(
        problem_id="p",
        group_id=0,
        prompt_ids=prompt,
        completion_ids=completion,
        sample_logprobs=[-0.1 * (i + 1) for i in range(len(completion))],
        text="",
        finish_reason=reason,
        answer="1",
        advantage=adv,
    )


def test_collate_left_pads_prompts_and_right_pads_completions():
    batch = collate([_rollout([5, 6, 7], [8, 9]), _rollout([4], [3, 2, 1], "length")], pad_id=0)
    # prompt width 3, completion width 3: every completion starts at column 3
    assert batch.prompt_width == 3
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 0], [0, 0, 4, 3, 2, 1]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert batch.completion_ids.tolist() == [[8, 9, 0], [3, 2, 1]]
    assert batch.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch.num_tokens == 5
    torch.testing.assert_close(batch.sample_logprobs[0], torch.tensor([-0.1, -0.2, 0.0]))


def test_collate_masks_truncated_completions_when_asked():
    rollouts = [_rollout([1], [2, 3]), _rollout([1], [4, 5], "length")]
    batch = collate(rollouts, pad_id=0, mask_truncated=True)
    assert batch.completion_mask.tolist() == [[1, 1], [0, 0]]


def test_micro_batches_follow_completion_length_only_when_that_pads_less():
    a, b = [1, 2, 3], [4, 5, 6]
    # rows alternate two prompts; completions of 1 and 9 tokens
    rows = [_rollout(a if i % 2 == 0 else b, [7] * (1 if i % 4 < 2 else 9)) for i in range(8)]
    # in order, every micro-batch of 4 holds a 9-token completion: 2 prompts x 3 + 4 rows x 9
    assert padded_tokens(rows, 4, share_prompt=True) == 2 * (2 * 3 + 4 * 9)
    assert padded_tokens(rows, 4, share_prompt=False) == 2 * (4 * 3 + 4 * 9)
    order = by_length(rows, 4, share_prompt=True)
    assert order == [0, 1, 4, 5, 2, 3, 6, 7]  # stable: equal lengths keep their order
    assert padded_tokens([rows[i] for i in order], 4, True) == (2 * 3 + 4 * 1) + (2 * 3 + 4 * 9)
    # long shared prompts, lengths 1 and 2: sorting would mix the prompts and cost more
    long_a, long_b = list(range(50)), list(range(1, 51))
    rows = [_rollout(long_a, [7] * (1 + i % 2)) for i in range(4)]
    rows += [_rollout(long_b, [7] * (2 - i % 2)) for i in range(4)]
    assert by_length(rows, 4, share_prompt=True) == list(range(8))
    assert by_length(rows, 4, share_prompt=False) != list(range(8))  # each row pays its prompt


def test_split_batches_sorts_within_each_mini_batch():
    rows = [_rollout([1], [7] * n) for n in (5, 1, 5, 1, 2, 9, 2, 9)]
    minis = split_batches(rows, mini_batches=2, micro_batch_size=2, pad_id=0, sort_by_length=True)
    lengths = [[int(b.completion_mask.sum(1).max()) for b in mini] for mini in minis]
    assert lengths == [[1, 5], [2, 9]]  # rows never move between mini-batches
    plain = split_batches(rows, mini_batches=2, micro_batch_size=2, pad_id=0)
    assert [[int(b.completion_mask.sum(1).max()) for b in mini] for mini in plain] == [
        [5, 5],
        [9, 9],
    ]


def test_sampler_is_seeded_covers_each_epoch_and_resumes():
    items = list(range(10))
    a = PromptSampler(items, batch_size=4, seed=3)
    batches = [a.next_batch() for _ in range(5)]  # 20 items = two full epochs
    assert sorted(batches[0] + batches[1] + batches[2][:2]) == items
    assert batches[0] != list(range(4))  # shuffled
    b = PromptSampler(items, batch_size=4, seed=3)
    b.next_batch()
    b.next_batch()
    c = PromptSampler(items, batch_size=4, seed=3)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))
    assert [c.next_batch() for _ in range(3)] == batches[2:]
    with pytest.raises(ValueError, match="10 items, this run has 9"):
        PromptSampler(items[:9], batch_size=4).load_state_dict(b.state_dict())


def test_sampler_end_of_epoch_state_equals_start_of_next():
    a = PromptSampler(list(range(8)), batch_size=4, seed=0)
    a.next_batch()
    a.next_batch()
    assert a.state_dict() == {"epoch": 1, "index": 0, "size": 8}
    b = PromptSampler(list(range(8)), batch_size=4, seed=0)
    b.load_state_dict({"epoch": 0, "index": 8, "size": 8})  # an un-normalised old state
    assert b.next_batch() == a.next_batch()


def test_plateau_fires_after_patience_evals_without_improvement():
    det = PlateauDetector(patience=3, min_delta=0.01, mode="max")
    values = [0.1, 0.3, 0.305, 0.29, 0.30]
    fired = [det.update(v, step=10 * i) for i, v in enumerate(values)]
    # 0.305 is not better than 0.3 by > 0.01, so evals 2, 3, 4 are the three flat ones
    assert fired == [False, False, False, False, True]
    assert det.plateau_step == 40 and det.best == 0.3 and det.best_step == 10
    assert det.update(0.5, step=50) and det.plateau_step == 40  # sticky once fired
    again = PlateauDetector(patience=3, min_delta=0.01)
    again.load_state_dict(json.loads(json.dumps(det.state_dict())))
    assert again.plateaued and again.history == det.history


def test_plateau_min_mode_and_bad_args():
    det = PlateauDetector(patience=1, mode="min", metric="train/loss")
    assert not det.update(1.0) and not det.update(0.5) and det.update(0.7)
    with pytest.raises(ValueError):
        PlateauDetector(patience=0)


def test_plateau_needs_every_metric_flat_for_n_steps():
    """The paper's rule: train reward AND validation flat for N steps (not N validations)."""
    det = PlateauDetector(metrics=["train/reward", "val/pass@1"], patience_steps=4, min_delta=0.01)
    det.observe({"val/pass@1": 0.5}, 0)
    fired = []
    for step in range(1, 13):
        values = {"train/reward": 0.2 + 0.05 * min(step, 8)}  # rises until step 8, then flat
        if step % 2 == 0:
            values["val/pass@1"] = 0.5  # never improves after step 0
        fired.append(det.observe(values, step))
    # val/pass@1 is flat from step 4 on, train/reward only from step 12 (best at step 8)
    assert fired == [False] * 11 + [True] and det.plateau_step == 12
    restored = PlateauDetector(metrics=["train/reward", "val/pass@1"], patience_steps=4)
    restored.load_state_dict(json.loads(json.dumps(det.state_dict())))
    assert restored.plateaued and restored.tracks["train/reward"].best_step == 8


def test_plateau_smooths_a_noisy_metric():
    """A single high step is not a new best once averaged over `smooth` observations."""
    values = [0.1, 0.5, 0.1, 0.1, 0.1, 0.1]
    raw = PlateauDetector(metric="train/reward", patience_steps=3)
    smooth = PlateauDetector(metric="train/reward", patience_steps=3, smooth=3)
    for step, v in enumerate(values, 1):
        raw.observe({"train/reward": v}, step)
        smooth.observe({"train/reward": v}, step)
    assert raw.tracks["train/reward"].best_step == 2 and raw.plateau_step == 5
    # moving means 0.1, 0.3, 0.233, 0.233, 0.1, 0.1: best 0.3 at step 2, flat 3 steps later
    assert smooth.tracks["train/reward"].best_step == 2 and smooth.plateau_step == 5
    only_val = PlateauDetector(metrics=["train/reward", "val/pass@1"], patience_steps=1)
    for step in range(1, 5):
        assert not only_val.observe({"train/reward": 0.1}, step)  # val never seen: no plateau
    with pytest.raises(ValueError):
        PlateauDetector(patience_steps=0)


def test_sampler_start_epoch_continues_the_epoch_count():
    items = list(range(10))
    fresh = PromptSampler(items, batch_size=10, seed=3)
    later = PromptSampler(items, batch_size=10, seed=3, start_epoch=2)
    fresh.next_batch(), fresh.next_batch()
    assert later.state_dict() == {"epoch": 2, "index": 0, "size": 10} == fresh.state_dict()
    assert later.next_batch() == fresh.next_batch()  # epoch 2's permutation, not epoch 0's
    with pytest.raises(ValueError):
        PromptSampler(items, batch_size=2, start_epoch=-1)


class _OneProcess:
    """The slice of a backend `CheckpointManager` talks to."""

    rank, world_size, is_main = 0, 1, True

    def __init__(self, value: float = 1.0):
        self.value = value

    def barrier(self):
        pass

    def save(self, directory):
        torch.save({"value": self.value}, directory / "torch_state.pt")

    def load(self, directory):
        self.value = torch.load(directory / "torch_state.pt", weights_only=True)["value"]


def test_checkpoints_are_atomic_pruned_and_resolved(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    assert mgr.resolve("auto") is None and mgr.resolve(None) is None
    for step in (2, 4, 6):
        mgr.save(step, _OneProcess(float(step)), {"sampler": {"epoch": 0}})
    assert [p.name for p in mgr.complete()] == ["step-000004", "step-000006"]
    # a save killed half-way leaves a temp dir (and maybe a step dir without its state file)
    (tmp_path / ".tmp-step-000008").mkdir()
    (tmp_path / "step-000010").mkdir()
    assert mgr.resolve("auto").name == "step-000006"
    backend = _OneProcess(0.0)
    state = mgr.load(mgr.resolve("auto"), backend)
    assert backend.value == 6.0 and state["step"] == 6 and state["sampler"] == {"epoch": 0}
    with pytest.raises(NudgekitError, match="not a complete checkpoint"):
        mgr.resolve(tmp_path / "step-000010")


def test_checkpoint_restores_rng_streams(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1)
    state = rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    torch.save(state, tmp_path / "rng.pt")
    random.random(), np.random.rand(), torch.rand(())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_run_config_of_an_older_checkpoint_reads_under_the_grouped_keys():
    """Checkpoints written before the settings were grouped recorded `group_size`, `ppo_epochs`,
    NuRL's `injector.gate`, ...: they resume under `sampling.*`, `update.*`, `schedule.*`."""
    from nudgekit.rl.runconfig import check_resume, upgrade_keys

    old = {
        "group_size": 4,
        "temperature": 1.0,
        "stop": [],
        "ppo_epochs": 1,
        "seed": 0,
        "injector._target_": "nudgekit.nurl.inject.HintInjector",
        "injector.gate": "zero_pass",
        "filter_n": 8,
        "optimizer.lr": 0.001,
    }
    new = {
        "sampling.group_size": 4,
        "sampling.temperature": 1.0,
        "sampling.stop": [],
        "update.ppo_epochs": 1,
        "seed": 0,
        "schedule.injector._target_": "nudgekit.nurl.inject.HintInjector",
        "schedule.injector.gate": "zero_pass",
        "schedule.filter_n": 8,
        "optimizer.lr": 0.001,
    }
    assert upgrade_keys(old) == new
    assert check_resume(old, new, [], "ckpt") == {}
    with pytest.raises(NudgekitError, match=r"sampling\.group_size 4 -> 8"):
        check_resume(old, {**new, "sampling.group_size": 8}, [], "ckpt")
    with pytest.raises(
        NudgekitError, match=r"schedule\.injector\.gate \"zero_pass\" -> \"always\""
    ):
        check_resume(old, {**new, "schedule.injector.gate": "always"}, [], "ckpt")
