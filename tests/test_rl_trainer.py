"""The GRPO trainer on a real tiny Qwen2 model: rollouts, updates, accumulation, resume, export."""

from __future__ import annotations

import pytest
import torch
from helpers.rl.build import make_trainer

from nudgekit.errors import NudgekitError
from nudgekit.rl import (
    Rollout,
    RolloutContext,
    RolloutHook,
    TrainerHook,
    collate,
    token_logprobs,
)
from nudgekit.rl.rollouts import by_length


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise-reproducible CPU kernels, and fair to a shared machine
    yield
    torch.set_num_threads(before)


class ListTracker:
    def __init__(self):
        self.logs, self.tables = [], []

    def log(self, metrics, step=None):
        self.logs.append((step, dict(metrics)))

    def log_table(self, name, rows, step=None):
        self.tables.append((name, step, rows))


def _weights(trainer):
    return trainer.backend.full_state_dict()


def _train(model_dir, run_dir, **kw):
    trainer = make_trainer(model_dir, **kw)
    trainer.setup(run_dir)
    tracker = ListTracker()
    metrics = trainer.train(tracker)
    return trainer, tracker, metrics


def test_rollouts_keep_exact_prompt_ids_and_logprobs_match_the_engine(tiny_qwen_dir, tmp_path):
    trainer = make_trainer(tiny_qwen_dir)
    trainer.setup(tmp_path)
    problems = list(enumerate(trainer.train_problems[:2]))
    plain = trainer.generate_rollouts(problems)
    hinted = trainer.generate_rollouts(problems, hint=lambda p: "mind the order", n=3, salt=1)
    assert len(plain) == 2 * trainer.group_size and len(hinted) == 6
    for r in plain + hinted:
        problem = dict(problems)[r.group_id]
        text = trainer.prompt(problem, "mind the order") if r.hinted else trainer.prompt(problem)
        assert r.prompt_ids == trainer.tokenizer(text, add_special_tokens=False).input_ids
    assert all(r.hinted and "Hint:" in trainer.tokenizer.decode(r.prompt_ids) for r in hinted)
    # the trainer's forward on prompt ++ completion reproduces the sampling log-probs
    batch = collate(plain + hinted, trainer.pad_id)
    with torch.no_grad():
        logprobs, _ = token_logprobs(trainer.backend.model, batch)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(logprobs[mask], batch.sample_logprobs[mask], atol=1e-4, rtol=0)


def test_training_updates_the_policy_and_logs_grpo_metrics(tiny_qwen_dir, tmp_path):
    trainer = make_trainer(tiny_qwen_dir)
    trainer.setup(tmp_path)
    before = _weights(trainer)
    tracker = ListTracker()
    metrics = trainer.train(tracker)
    after = _weights(trainer)
    assert trainer.step == 3 and metrics["train/steps"] == 3
    assert max((after[k] - before[k]).abs().max() for k in before) > 1e-3
    steps = [s for s, _ in tracker.logs]
    assert steps == [1, 2, 3]
    logged = tracker.logs[0][1]
    for key in (
        "train/reward",
        "train/frac_reward_zero_std",
        "train/approx_kl",
        "train/clip_frac/region",
        "train/entropy",
        "train/loss",
        "train/grad_norm",
        "perf/tokens_per_s",
        "train/lr",
    ):
        assert key in logged and logged[key] == logged[key], key  # present and not NaN
    assert 0 < logged["train/entropy"] < 10
    assert logged["train/logprob_abs_diff"] < 1e-4  # mu=1: old log-probs = current, detached


def test_groups_with_equal_rewards_produce_no_update(tiny_qwen_dir, tmp_path):
    trainer = make_trainer(tiny_qwen_dir, verifier=lambda completion, answer: 1.0, max_steps=1)
    trainer.setup(tmp_path)
    before = _weights(trainer)
    tracker = ListTracker()
    trainer.train(tracker)
    logged = tracker.logs[0][1]
    assert logged["train/frac_reward_zero_std"] == 1.0
    assert logged["train/loss"] == 0.0
    after = _weights(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_gradient_accumulation_matches_one_big_micro_batch(tiny_qwen_dir, tmp_path):
    # 16 rollouts per optimizer step as 1 micro-batch of 16 or as 8 micro-batches of 2: the loss
    # is normalised by the step's global token count, so the gradients (and weights) agree.
    kw = dict(max_steps=2, mini_batches=1)
    big, _, _ = _train(tiny_qwen_dir, tmp_path / "a", micro_batch_size=16, **kw)
    small, _, _ = _train(tiny_qwen_dir, tmp_path / "b", micro_batch_size=2, **kw)
    a, b = _weights(big), _weights(small)
    assert max((a[k] - b[k]).abs().max() for k in a) < 1e-5


def test_length_sorted_micro_batches_give_the_same_update(tiny_qwen_dir, tmp_path):
    # the loss is a sum over micro-batches normalised by global counts: cutting micro-batches
    # from rollouts sorted by completion length changes only the padding
    seen = []

    def ragged(ctx):  # the tiny policy never stops early: cut completions
        rollouts = ctx.rollouts
        for i, r in enumerate(rollouts):
            n = 1 + (3 * i) % len(r.completion_ids)
            r.completion_ids, r.sample_logprobs = r.completion_ids[:n], r.sample_logprobs[:n]
        seen.append(list(rollouts))
        return rollouts

    # every row runs its own prompt, so sorting pays off here (with shared prompts it would mix
    # the groups' prompts into each micro-batch and cost more: `by_length` keeps the order then)
    kw = dict(max_steps=2, micro_batch_size=2, hooks=[RolloutHook(ragged)], share_prompt=False)
    sorted_, _, _ = _train(tiny_qwen_dir, tmp_path / "a", sort_by_length=True, **kw)
    plain, _, _ = _train(tiny_qwen_dir, tmp_path / "b", sort_by_length=False, **kw)
    assert all(by_length(r, 2, True) == list(range(len(r))) for r in seen)
    assert any(by_length(r, 2, False) != list(range(len(r))) for r in seen[:2])  # it did reorder
    a, b = _weights(sorted_), _weights(plain)
    assert max((a[k] - b[k]).abs().max() for k in a) < 1e-5


def test_ppo_epochs_and_mini_batches_clip_and_track_kl(tiny_qwen_dir, tmp_path):
    from nudgekit.rl import ClippedPolicyLoss, SeqMeanTokenMean

    loss = ClippedPolicyLoss(0.2, 0.2, beta=0.1, aggregation=SeqMeanTokenMean())
    trainer, tracker, _ = _train(
        tiny_qwen_dir, tmp_path, loss=loss, ppo_epochs=2, mini_batches=2, max_steps=2
    )
    logged = tracker.logs[-1][1]
    assert trainer.ref_model is not None  # beta > 0 loads the reference policy
    assert logged["train/optimizer_steps"] == 4
    assert logged["train/approx_kl"] > 0 and logged["train/kl"] > 0
    assert logged["train/clip_frac/region"] > 0


def test_validation_plateau_stops_training_and_logs_a_table(tiny_qwen_dir, tmp_path):
    from nudgekit.rl import PlateauDetector

    # a constant validation reward is flat from the start: patience 2 stops after 2 more evals
    trainer, tracker, metrics = _train(
        tiny_qwen_dir,
        tmp_path,
        verifier=lambda c, a: 0.0,
        max_steps=10,
        val_every=1,
        plateau=PlateauDetector(patience=2, metric="val/pass@1"),
    )
    assert trainer.step == 2 and metrics["train/plateau_step"] == 2
    assert metrics["val/pass@1_initial"] == 0.0 and metrics["val/pass@1"] == 0.0
    assert [s for s, _ in tracker.logs] == [0, 1, 2]
    name, step, rows = tracker.tables[0]
    assert name == "val/samples" and step == 0
    assert {"prompt", "completion", "reward", "answer"} <= set(rows[0])


def test_rollout_hooks_run_between_score_and_advantages(tiny_qwen_dir, tmp_path):
    seen = []

    def hook(ctx: RolloutContext) -> list[Rollout]:
        rollouts = ctx.rollouts
        seen.append([r.reward for r in rollouts])
        for r in rollouts:  # pretend a hint made every first sample of a group succeed
            r.reward = 1.0 if r is rollouts[r.group_id * ctx.group_size] else 0.0
        return rollouts

    trainer, tracker, _ = _train(tiny_qwen_dir, tmp_path, hooks=[RolloutHook(hook)], max_steps=1)
    assert len(seen) == 1 and len(seen[0]) == 16
    assert tracker.logs[0][1]["train/reward"] == 0.25  # advantages were computed after the hook


class RecordingHook(TrainerHook):
    """Records the hook points it is called at; keeps a counter in the checkpoint state."""

    def __init__(self, end: int | None = None) -> None:
        self.calls, self.state, self.end, self.loaded = [], {"rollout_calls": 0}, end, None

    def on_train_start(self, ctx):
        self.calls.append(("train_start", ctx.step))

    def on_step_start(self, ctx):
        self.calls.append(("step_start", ctx.step))

    def on_rollouts(self, ctx):
        self.calls.append(("rollouts", ctx.step))
        self.state["rollout_calls"] += 1
        assert len(ctx.rollouts) == 4 * ctx.group_size
        return ctx.rollouts

    def on_step_end(self, ctx, metrics):
        self.calls.append(("step_end", ctx.step))
        metrics["hook/rollout_calls"] = float(self.state["rollout_calls"])

    def end_step(self, ctx, end):
        return end if self.end is None else self.end

    def state_dict(self):
        return self.state

    def load_state_dict(self, state, path):
        self.loaded = dict(state)
        self.state = dict(state)

    def final_metrics(self):
        return {"hook/final": 1.0}


def test_hook_points_run_in_order_and_their_state_resumes(tiny_qwen_dir, tmp_path):
    # the schedule sets the run length (2 steps, not max_steps=5); hooks see every point in order
    hook = RecordingHook(end=2)
    trainer, tracker, metrics = _train(
        tiny_qwen_dir, tmp_path, schedule=hook, max_steps=5, save_every=1, keep_checkpoints=None
    )
    assert trainer.step == 2 and metrics["hook/final"] == 1.0
    assert hook.calls == [
        ("train_start", 0),
        ("step_start", 0),
        ("rollouts", 0),
        ("step_end", 1),
        ("step_start", 1),
        ("rollouts", 1),
        ("step_end", 2),
    ]
    assert [m["hook/rollout_calls"] for _, m in tracker.logs] == [1.0, 2.0]
    # its state is the checkpoint's extra_state, and a resumed run's hook gets it back
    again = RecordingHook(end=2)
    resumed = make_trainer(
        tiny_qwen_dir,
        schedule=again,
        max_steps=5,
        keep_checkpoints=None,
        resume=str(tmp_path / "checkpoints" / "step-000001"),
    )
    resumed.setup(tmp_path)
    assert resumed.step == 1 and again.loaded == {"rollout_calls": 1}
    resumed.train()
    resumed.cleanup()
    assert again.state == {"rollout_calls": 2} and again.calls[-1] == ("step_end", 2)


def test_resume_at_an_epoch_boundary_matches_an_uninterrupted_run(tiny_qwen_dir, tmp_path):
    # 8 training problems, 4 per step: step 2 ends epoch 0 exactly
    full, _, _ = _train(tiny_qwen_dir, tmp_path / "full", max_steps=4)
    first, _, _ = _train(tiny_qwen_dir, tmp_path / "part", max_steps=2)
    assert first.sampler.state_dict()["epoch"] == 1 and first.sampler.state_dict()["index"] == 0
    at_boundary = _weights(first)
    resumed, tracker, _ = _train(tiny_qwen_dir, tmp_path / "part", max_steps=4, resume="auto")
    assert [s for s, _ in tracker.logs] == [3, 4]  # it trained the remaining two steps
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(at_boundary[k], b[k]) for k in b)


def test_export_is_a_plain_hf_checkpoint(tiny_qwen_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer, _, _ = _train(tiny_qwen_dir, tmp_path, max_steps=1, export=True)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    AutoTokenizer.from_pretrained(tmp_path / "policy")
    mine, theirs = _weights(trainer), exported.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert (tmp_path / "policy" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_problems": []}, "train_problems is empty"),
        ({"group_size": 0}, "group_size must be >= 1"),
        ({"advantage_scale": "global"}, "advantage_scale"),
        ({"mini_batches": 3}, "do not split into mini_batches=3"),
        ({"resume": "/nonexistent/step-000001"}, "not a complete checkpoint"),
    ],
)
def test_bad_settings_are_one_line_user_errors(tiny_qwen_dir, tmp_path, kwargs, message):
    with pytest.raises(NudgekitError, match=message) as err:
        make_trainer(tiny_qwen_dir, **kwargs).setup(tmp_path)
    assert "\n" not in str(err.value)


def test_torch_backend_refuses_multiple_processes(tiny_qwen_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    trainer = make_trainer(tiny_qwen_dir, prompts_per_step=4)
    with pytest.raises(NudgekitError, match="trainer/deepspeed=zero1"):
        trainer.setup(tmp_path)
