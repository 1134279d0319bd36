"""A hint writer's engine is built lazily and released: `hints=engine|qwen` configs instantiate
without building an engine (nurl_qwen composes and instantiates where vLLM is not installed), a
factory engine lives only for one `collect`, and a trainer-bound `SelfHints` builds nothing."""

from __future__ import annotations

import functools
import gc
import importlib.util
import weakref

import pytest
from helpers.config import compose_cfg
from hydra.utils import instantiate

from nudgekit.data.problem import Problem
from nudgekit.engines.hf import HFEngine
from nudgekit.models import ModelSpec
from nudgekit.nurl import ChatRenderer, EngineHints, SelfHints

PROBLEMS = [Problem("p1", "2 + 3", "5"), Problem("p2", "4 + 4", "8")]
KW = dict(explain_max_new_tokens=4, hint_max_new_tokens=4, max_attempts=1)


class CountingFactory:
    """A real engine factory that remembers what it built (weakly)."""

    def __init__(self, factory) -> None:
        self.factory, self.built = factory, []

    def __call__(self):
        engine = self.factory()
        self.built.append(weakref.ref(engine))
        return engine


def test_nurl_qwen_hint_source_builds_no_engine():
    """The hint writer is a factory (vLLM checked, not started); without vLLM the config stops
    at once with the one-line error, before anything loads."""
    cfg = compose_cfg(["experiment=nurl_qwen"], tiny=False)
    assert cfg.pipeline.engine._target_ == "nudgekit.rl.rollout_engine.vllm_rollouts"
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(Exception, match="vllm engine needs"):
            instantiate(cfg.hints)
        return
    source = instantiate(cfg.hints)
    assert isinstance(source, SelfHints) and source.engine is None
    assert isinstance(source.engine_factory, functools.partial)  # built only by collect


def test_rollout_engine_follows_the_engine_choice():
    """engine=vllm selects vLLM rollouts (nurl_qwen's settings resolved into them); engine=hf
    gives the hf rollouts untouched by those settings."""
    from omegaconf import OmegaConf

    qwen = OmegaConf.to_container(
        compose_cfg(["experiment=nurl_qwen"], tiny=False).trainer.rollout, resolve=True
    )
    assert qwen["_target_"] == "nudgekit.rl.rollout_engine.vllm_rollouts"
    assert (qwen["dtype"], qwen["max_model_len"], qwen["sleep_mode"]) == ("bfloat16", 8192, True)
    plain = OmegaConf.to_container(
        compose_cfg(["experiment=grpo_tiny", "engine=vllm"], tiny=False).trainer.rollout,
        resolve=True,
    )
    assert (plain["dtype"], plain["sleep_mode"], plain["llm_kwargs"]) == (None, False, {})
    hf = compose_cfg(["experiment=nurl_qwen", "engine=hf"], tiny=False)
    assert OmegaConf.to_container(hf.pipeline.engine, resolve=True) == {
        "_target_": "nudgekit.engines.HFEngine",
        "_partial_": True,
        "max_batch_size": 128,
    }


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_rollouts_fail_fast_without_vllm():
    cfg = compose_cfg(["experiment=grpo_tiny", "engine=vllm"], tiny=False)
    with pytest.raises(Exception, match="vllm engine needs"):
        instantiate(cfg.trainer.rollout)


def test_engine_hints_config_engine_is_a_factory():
    cfg = compose_cfg(["pipeline=hints", "hints=engine"], tiny=False)
    assert cfg.hints.engine._partial_ is True


def test_factory_engine_lives_for_one_collect(tiny_qwen_dir):
    spec = ModelSpec(str(tiny_qwen_dir))
    factory = CountingFactory(functools.partial(HFEngine, spec, max_batch_size=4))
    source = EngineHints(factory, render=ChatRenderer(chat=False), **KW)
    assert factory.built == []  # nothing built at construction
    got = source.collect(PROBLEMS)
    assert got.generations > 0 and len(factory.built) == 1
    assert source.engine is factory  # the factory again, the engine dropped
    gc.collect()
    assert factory.built[0]() is None  # released: nothing holds the engine (or its model)
    source.collect(PROBLEMS[:1])
    assert len(factory.built) == 2


def test_self_hints_use_a_bound_engine_and_build_their_own_lazily(tiny_qwen_dir):
    spec = ModelSpec(str(tiny_qwen_dir))
    factory = CountingFactory(functools.partial(HFEngine, spec, max_batch_size=4))
    source = SelfHints(spec, engine=factory, **KW)
    source.collect(PROBLEMS)  # no trainer: its own engine, built and released
    gc.collect()
    assert len(factory.built) == 1 and factory.built[0]() is None and source.engine is None
    trainer_engine = HFEngine(spec, max_batch_size=4)
    source.bind(trainer_engine, trainer_engine.tokenizer)
    source.collect(PROBLEMS)
    assert len(factory.built) == 1 and source.engine is trainer_engine  # kept: not ours
