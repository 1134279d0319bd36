"""NuRL inside the GRPO trainer: gate + G-1 injection, hinted log-probs, the two-stage schedule.

The model (`hint_model`, `helpers.nurl`) is a real tiny Qwen2 fine-tuned in a few seconds so
that hints matter: on problem A it answers wrong without a hint and right with one; on problem B
it is right either way. So A's group has pass rate 0 (the gate opens) and B's has pass rate 1
(untouched). What a schedule may see of the trainer: `test_nurl_context.py`.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from helpers.nurl import HINT, A, B, CountingSource, G, ListTracker, hint_store, make_nurl

from nudgekit.errors import NudgekitError
from nudgekit.nurl import HintInjector, HintStore, NuRLSchedule, StoreHints
from nudgekit.rl import GRPOTrainer
from nudgekit.rl.plateau import PlateauDetector
from nudgekit.rl.rollouts import collate, token_logprobs


@pytest.fixture
def trainer(hint_model, tmp_path):
    t = make_nurl(hint_model)
    t.setup(tmp_path)
    t.schedule.injector.store = hint_store()
    yield t
    t.cleanup()


def one_step(trainer: GRPOTrainer) -> tuple[list, list]:
    """Sample, score, refine and compute advantages for A (group 0) and B (group 1)."""
    rollouts = trainer.generate_rollouts([(0, A), (1, B)])
    trainer.score(rollouts)
    merged = trainer.refine_rollouts(rollouts)
    trainer.compute_advantages(merged)
    return rollouts, merged


def test_zero_pass_group_gets_one_original_and_g_minus_1_hinted(trainer):
    rollouts, merged = one_step(trainer)
    assert [r.reward for r in rollouts] == [0.0] * G + [1.0] * G
    a = [r for r in merged if r.group_id == 0]
    assert [r.hinted for r in a] == [False] + [True] * (G - 1)
    assert a[0] is rollouts[0]  # the kept original
    assert [r.reward for r in a] == [0.0] + [1.0] * (G - 1)
    assert a[0].advantage < 0 and all(r.advantage > 0 for r in a[1:])
    tok = trainer.tokenizer
    hinted_ids = tok(trainer.prompt(A, HINT), add_special_tokens=False).input_ids
    plain_ids = tok(trainer.prompt(A), add_special_tokens=False).input_ids
    assert a[0].prompt_ids == plain_ids and all(r.prompt_ids == hinted_ids for r in a[1:])
    # B had successes: the very same rollouts, advantage 0 (all correct)
    b = [r for r in merged if r.group_id == 1]
    assert all(x is y for x, y in zip(b, rollouts[G:])) and len(b) == G
    assert all(r.advantage == 0.0 and not r.hinted for r in b)
    metrics, decisions = trainer.schedule.injector.step_metrics(trainer.backend)
    assert metrics["nurl/groups_hinted"] == 1 and metrics["nurl/groups_zero_pass"] == 1
    assert metrics["nurl/frac_reward_zero_std_before"] == 1.0
    assert metrics["nurl/frac_reward_zero_std_after"] == 0.5
    assert metrics["nurl/hinted_pass_rate"] == 1.0 and metrics["nurl/hinted_adv_pos_frac"] == 1.0
    assert metrics["nurl/regen_rollouts"] == G - 1 and metrics["nurl/regen_tokens"] > 0
    assert [
        (d.problem_id, d.group_id, d.pre_pass_rate, d.post_pass_rate, d.status, d.hint)
        for d in decisions
    ] == [("A", 0, 0.0, 1.0, "hinted", HINT)]


def test_hinted_logprobs_are_computed_with_the_hint_in_context(trainer):
    _, merged = one_step(trainer)
    hinted = next(r for r in merged if r.hinted)
    model = trainer.backend.model
    with torch.no_grad():
        via_trainer, _ = token_logprobs(model, collate([hinted], trainer.pad_id))
        ids = torch.tensor([hinted.prompt_ids + hinted.completion_ids])
        logits = model(input_ids=ids).logits[0, len(hinted.prompt_ids) - 1 : -1]
        direct = torch.log_softmax(logits.float(), -1).gather(
            -1, torch.tensor(hinted.completion_ids)[:, None]
        )[:, 0]
        plain = trainer.tokenizer(trainer.prompt(A), add_special_tokens=False).input_ids
        ids = torch.tensor([plain + hinted.completion_ids])
        logits = model(input_ids=ids).logits[0, len(plain) - 1 : -1]
        unhinted = torch.log_softmax(logits.float(), -1).gather(
            -1, torch.tensor(hinted.completion_ids)[:, None]
        )[:, 0]
    assert torch.allclose(via_trainer[0, : len(direct)], direct, atol=1e-5)
    assert torch.allclose(direct, torch.tensor(hinted.sample_logprobs), atol=1e-4)
    assert (direct - unhinted).abs().max() > 1.0  # without the hint "Answer: 1" is unlikely


def test_gate_variants(trainer):
    trainer.schedule.injector.gate = "never"
    rollouts, merged = one_step(trainer)
    assert merged == rollouts and not any(r.hinted for r in merged)
    trainer.schedule.injector.gate, trainer.schedule.injector.hinted_per_group = "always", "G"
    _, merged = one_step(trainer)
    assert [r.hinted for r in merged] == [True] * (2 * G)
    assert [r.group_id for r in merged] == [0] * G + [1] * G
    trainer.schedule.injector.enabled = False  # stage 1 with start=after_plateau
    rollouts, merged = one_step(trainer)
    assert merged == rollouts


def test_missing_hint_and_prompt_budget(trainer):
    trainer.schedule.injector.store = HintStore()
    _, merged = one_step(trainer)
    assert not any(r.hinted for r in merged)
    _, decisions = trainer.schedule.injector.step_metrics(trainer.backend)
    assert [d.status for d in decisions] == ["no_hint"]
    trainer.schedule.injector.store = hint_store()
    hinted_len = len(trainer.tokenizer(trainer.prompt(A, HINT), add_special_tokens=False).input_ids)
    trainer.schedule.injector.max_prompt_tokens = hinted_len - 1
    with pytest.raises(NudgekitError, match=f"problem A has {hinted_len} tokens"):
        one_step(trainer)
    trainer.schedule.injector.on_overflow = "skip"
    _, merged = one_step(trainer)
    metrics, decisions = trainer.schedule.injector.step_metrics(trainer.backend)
    assert not any(r.hinted for r in merged) and metrics["nurl/groups_too_long"] == 1
    assert [d.status for d in decisions] == ["too_long"]
    trainer.schedule.injector.max_prompt_tokens = hinted_len
    _, merged = one_step(trainer)
    assert sum(r.hinted for r in merged) == G - 1


def test_config_errors():
    with pytest.raises(NudgekitError, match="needs a hint source"):
        NuRLSchedule(hints=None, injector=HintInjector(gate="zero_pass"))
    with pytest.raises(NudgekitError, match="start='later'"):
        NuRLSchedule(hints=StoreHints(HintStore()), start="later")
    with pytest.raises(NudgekitError, match="filter_n >= 1"):
        NuRLSchedule(hints=StoreHints(HintStore()), filter_n=0)
    with pytest.raises(NudgekitError, match="gate='some'"):
        HintInjector(gate="some")


def final_state(trainer: GRPOTrainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.backend.full_state_dict().items()}


def test_two_stage_schedule_filters_and_resumes(hint_model, tmp_path):
    kw = dict(stage1_max_steps=1, stage2_steps=2, save_every=1, keep_checkpoints=None)
    full = make_nurl(hint_model, hints=CountingSource(hint_store()), **kw)
    full.setup(tmp_path / "full")
    metrics = full.train()
    ref = final_state(full)
    full.cleanup()
    assert full.schedule.hint_source.calls == 1
    assert metrics["train/steps"] == 3 and metrics["nurl/stage"] == 2
    assert metrics["nurl/filter_kept"] == 1 and metrics["nurl/stage2_start"] == 1
    assert full.schedule.state["filtered_ids"] == ["A"]  # B is solved 4/4 by the stage-1 policy
    assert full.schedule.state["stage1_end"] == "step_cap"
    assert HintStore.load(tmp_path / "full" / "hints.jsonl").hints() == hint_store().hints()
    ckpts = tmp_path / "full" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [f"step-00000{i}" for i in range(4)]
    # resume from right after hint collection (stage 1) and right after the filter (stage 2)
    for step, stage in ((0, 1), (1, 2)):
        run = tmp_path / f"resume{step}"
        shutil.copytree(ckpts / f"step-00000{step}", run / "checkpoints" / f"step-00000{step}")
        again = make_nurl(hint_model, hints=CountingSource(hint_store()), resume="auto", **kw)
        again.setup(run)
        assert again.schedule.stage == stage and again.step == step
        again.train()
        assert again.schedule.hint_source.calls == 0  # the store came from the checkpoint
        assert again.schedule.state["filtered_ids"] == ["A"]
        got = final_state(again)
        again.cleanup()
        assert all(torch.equal(ref[k], got[k]) for k in ref), f"resume from step {step} differs"


def test_stage_switch_on_plateau_and_original_reward_in_stage2(hint_model, tmp_path):
    """Train reward and val pass@1 stay at 0.5 (A always wrong, B always right): both are flat
    for 2 steps at step 3, well before the 6-step cap, so stage 2 starts there."""
    plateau = PlateauDetector(
        metrics=["train/reward", "val/pass@1"], patience_steps=2, min_delta=0.1
    )
    t = make_nurl(
        hint_model,
        val_problems=[A, B],
        val_every=1,
        val_n=2,
        plateau=plateau,
        stage1_max_steps=6,
        stage2_steps=1,
    )
    t.setup(tmp_path)
    tracker = ListTracker()
    final = t.train(tracker)
    t.cleanup()
    assert t.schedule.state["stage1_end"] == "plateau" and t.schedule.state["stage2_start"] == 3
    assert final["nurl/stage2_start"] == 3 and final["nurl/stage1_plateau"] == 1
    steps = {s: m for s, m in tracker.rows if "train/reward" in m}
    assert sorted(steps) == [1, 2, 3, 4]
    for s in (1, 2, 3):  # stage 1: nothing regenerated, so no hinted pass rate is logged
        assert steps[s]["train/reward"] == 0.5 and "nurl/hinted_pass_rate" not in steps[s]
    last = steps[4]  # stage 2 on the filtered set [A]: originals all fail, hinted ones pass
    assert last["nurl/groups_hinted"] == 2 and last["nurl/hinted_pass_rate"] > 0
    assert last["train/reward"] == 0.0 and last["train/reward_mixed"] > 0.0
    assert last["nurl/signal_unhinted"] == 0.0 and last["nurl/signal_mixed"] == 1.0
    assert last["train/frac_reward_zero_std"] == 1.0 == last["nurl/frac_reward_zero_std_before"]
    # stage 2's sampler starts epoch 3 (stage 1 used epochs 0-2), then one step of 2 prompts
    # over the single kept problem covers epochs 3 and 4
    assert t.sampler.state_dict() == {"epoch": 5, "index": 0, "size": 1}
