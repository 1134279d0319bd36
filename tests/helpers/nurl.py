"""NuRL test builders: a tiny Qwen2 fine-tuned so that hints matter (on problem A it answers
wrong without a hint and right with one; on problem B it is right either way), its hint store,
and NuRL's composed GRPO trainer over it (`make_nurl`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from helpers.rl.build import make_trainer
from nudgekit.data.problem import Problem
from nudgekit.engines.hf import HFEngine
from nudgekit.models import ChatPrompt, ModelSpec
from nudgekit.models.random_init import build_tiny_model
from nudgekit.nurl import HintInjector, HintRecord, HintStore, NuRLSchedule, StoreHints
from nudgekit.rewards import load_verifier
from nudgekit.rl import GRPOTrainer

A = Problem("A", "Start 3: inc dbl", "1")
B = Problem("B", "Start 4: neg", "2")
HINT = "look"
G = 4


def build_hint_model(path: Path) -> Path:
    """Fine-tune a random tiny Qwen2 on 4 sequences: A -> wrong, A + hint -> right, B -> right."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = build_tiny_model(path.parent / f"{path.name}-init", arch="qwen2", hidden_size=64)
        tok = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base)
        prompt = ChatPrompt(ModelSpec(str(base)), "tiny")
        data = [
            (prompt(A), "Answer: 2"),
            (prompt(A, HINT), "Answer: 1"),
            (prompt(B), "Answer: 2"),
            (prompt(B, HINT), "Answer: 2"),
        ]
        seqs = [
            (
                tok(p, add_special_tokens=False).input_ids,
                tok(c, add_special_tokens=False).input_ids + [tok.eos_token_id],
            )
            for p, c in data
        ]
        width = max(len(p) + len(c) for p, c in seqs)
        ids = torch.full((len(seqs), width), tok.eos_token_id)
        labels = torch.full((len(seqs), width), -100)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (p, c) in enumerate(seqs):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
            mask[i, : len(p) + len(c)] = 1
        torch.manual_seed(0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(150):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 1e-3
        model.save_pretrained(path)
        tok.save_pretrained(path)
        return path
    finally:
        torch.set_num_threads(threads)


def hint_store() -> HintStore:
    return HintStore([HintRecord(id=p.id, hint=HINT, source="file") for p in (A, B)])


class CountingSource(StoreHints):
    def __init__(self, store: HintStore) -> None:
        super().__init__(store)
        self.calls = 0

    def collect(self, problems):
        self.calls += 1
        return super().collect(problems)


SCHEDULE = (
    "injector",
    "hints",
    "start",
    "stage1_max_steps",
    "stage2_steps",
    "filter_n",
    "filter_solved",
    "filter_temperature",
)


def make_nurl(
    model_dir: Path, schedule_type: type[NuRLSchedule] = NuRLSchedule, **overrides: Any
) -> GRPOTrainer:
    """The composed GRPO trainer (`helpers.rl.build.make_trainer`) with NuRL's schedule; schedule
    arguments go to `schedule_type`, the rest to `make_trainer`."""
    kwargs: dict[str, Any] = dict(
        train_problems=[A, B],
        verifier=load_verifier("tiny"),
        engine=functools.partial(HFEngine, max_batch_size=64),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.0),
        lr_scheduler=None,
        prompts_per_step=2,
        group_size=G,
        max_new_tokens=12,
        micro_batch_size=8,
        val_every=0,
        export=False,
        resume=None,
        seed=0,
        hints=StoreHints(hint_store()),
        injector=HintInjector(),
        stage1_max_steps=1,
        stage2_steps=1,
        filter_n=4,
    )
    kwargs.update(overrides)
    schedule = schedule_type(**{k: kwargs.pop(k) for k in SCHEDULE if k in kwargs})
    return make_trainer(str(model_dir), schedule=schedule, **kwargs)


class ListTracker:
    """Keeps every logged metrics dict (the tracker interface the trainer calls)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []

    def log(self, metrics, step):
        self.rows.append((step, dict(metrics)))

    def log_table(self, *args, **kwargs):
        pass
