"""NuRL's schedule sees the trainer only through its `ScheduleContext`: every hook point is handed
that context, the context has exactly its documented members, and no `nudgekit.nurl` module names
the trainer or reads its internals."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from helpers.nurl import A, B, ListTracker, make_nurl

import nudgekit.nurl
from nudgekit.nurl import NuRLSchedule
from nudgekit.rl.hooks import ScheduleContext

# what a schedule may read or do: the documented members of `ScheduleContext`, nothing more
CONTEXT_MEMBERS = {
    *("step", "rank", "world_size", "is_main", "run_dir", "seed", "sampling", "plateaued"),
    *("engine", "prompt", "verifier", "tokenizer", "train_problems", "generating"),
    *("log", "log_table", "record", "all_reduce_sum", "all_gather_object"),
    *("use_problems", "save_checkpoint"),
}
# the trainer's internals a schedule used to reach into
TRAINER_INTERNALS = (
    *("backend", "optimizer", "model", "module", "ref_model", "loss", "grad_accum"),
    *("sampler", "history", "plateau", "checkpoints", "hooks", "schedule", "tracker"),
    *("prompts_per_step", "train_step", "update", "load_checkpoint"),
)


class RecordingSchedule(NuRLSchedule):
    """NuRL's schedule, recording what each of its hook points is handed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handed: list[tuple[str, Any]] = []

    def on_train_start(self, ctx):
        self.handed.append(("on_train_start", ctx))
        super().on_train_start(ctx)

    def on_step_start(self, ctx):
        self.handed.append(("on_step_start", ctx))
        super().on_step_start(ctx)

    def on_step_end(self, ctx, metrics):
        self.handed.append(("on_step_end", ctx))
        super().on_step_end(ctx, metrics)

    def end_step(self, ctx, end):
        self.handed.append(("end_step", ctx))
        return super().end_step(ctx, end)

    def before_resume(self, ctx, state):
        self.handed.append(("before_resume", ctx))
        super().before_resume(ctx, state)


def test_the_schedule_sees_only_its_context(hint_model, tmp_path):
    kw = dict(stage1_max_steps=1, stage2_steps=1, save_every=1, keep_checkpoints=None)
    t = make_nurl(hint_model, RecordingSchedule, **kw)
    t.setup(tmp_path / "run")
    tracker = ListTracker()
    metrics = t.train(tracker)
    t.cleanup()
    # hints, the filter (B solved 4/4) and stage 2 all ran through the context
    assert metrics["nurl/stage"] == 2 and metrics["nurl/filter_kept"] == 1
    assert metrics["nurl/stage2_start"] == 1  # `record`ed summary metrics reach the final ones
    assert [p.id for p in t.sampler.items] == ["A"]  # `use_problems` replaced the training set
    assert any("hints/accepted" in m for _, m in tracker.rows)  # `log` reached the tracker
    # a resume in stage 2: `before_resume` narrows the training set through the context too
    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    again = make_nurl(hint_model, RecordingSchedule, resume=str(ckpt), **kw)
    again.setup(tmp_path / "again")
    assert again.schedule.stage == 2 and [p.id for p in again.sampler.items] == ["A"]
    again.cleanup()
    handed = t.schedule.handed + again.schedule.handed
    assert {point for point, _ in handed} == {
        "on_train_start",
        "on_step_start",
        "on_step_end",
        "end_step",
        "before_resume",
    }
    assert all(type(ctx) is ScheduleContext for _, ctx in handed)
    assert {id(ctx) for _, ctx in handed} == {id(t.context), id(again.context)}
    # the context exposes exactly its documented members, none of the trainer's internals
    ctx = t.context
    assert {name for name in dir(ctx) if not name.startswith("_")} == CONTEXT_MEMBERS
    for name in TRAINER_INTERNALS:
        assert not hasattr(ctx, name), name
    with pytest.raises(AttributeError):
        ctx.sampler = t.sampler  # nothing can be hung on it either
    assert ctx.step == t.step == 2 and ctx.train_problems == [A, B]


def test_nothing_in_nurl_takes_the_trainer():
    """No module of `nudgekit.nurl` names a `trainer` (parameter or variable) or reads the
    trainer internals a schedule used to reach into; the schedule gets a `ScheduleContext`."""
    internals = {"sampler", "history", "plateau", "backend", "optimizer", "ref_model"}
    for path in sorted(Path(nudgekit.nurl.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
        attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert "trainer" not in names, f"{path.name} takes the trainer"
        assert not attrs & internals, f"{path.name} reads {sorted(attrs & internals)}"
