"""Nudging over engines from config: the chunked decoder over a real OpenAI-compatible server on
127.0.0.1 (same texts as in process, questions in flight at once), the cached decoder and proxy
tuning refusing engines without in-process models, and the pipeline freeing models before the
next baseline loads."""

from __future__ import annotations

import functools
import json
import weakref
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.config import compose_cfg
from helpers.nudging import engine, model_dirs
from helpers.openai_server import OpenAITestServer

from nudgekit.engines import OpenAIEngine, VLLMEngine
from nudgekit.errors import NudgekitError
from nudgekit.eval import EvalPipeline
from nudgekit.models import ChatPrompt, ModelSpec, load_tokenizer
from nudgekit.nudging import CachedNudgingDecoder, ChunkedNudgingDecoder, NudgingPipeline
from nudgekit.rewards import load_verifier
from nudgekit.runtime import validate_targets
from nudgekit.zoo import tiny_problems

KW = dict(gamma=0.4, chunk_tokens=8, max_new_tokens=24)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return model_dirs(tmp_path_factory)


@pytest.fixture(scope="module")
def prompts(dirs):
    base, small = ModelSpec(str(dirs["base"])), ModelSpec(str(dirs["small"]))
    problems = tiny_problems("test", n=12)
    render_b, render_n = ChatPrompt(base, "tiny", chat=False), ChatPrompt(small, "tiny")
    return [render_b(p) for p in problems], [render_n(p) for p in problems]


@pytest.fixture(scope="module")
def in_process(dirs, prompts):
    """The chunked decoder's outputs over in-process hf engines (the reference)."""
    dec = ChunkedNudgingDecoder(engine(dirs["base"]), engine(dirs["small"]), **KW)
    assert dec.concurrency == 1  # hf engines cannot serve concurrent calls
    return dec.decode(*prompts)


@pytest.fixture(scope="module")
def server(dirs):
    """One server for the three test models, by directory name (as `vllm serve DIR` names them)."""
    models = {str(dirs[k]): engine(dirs[k]) for k in ("base", "small", "large")}
    with OpenAITestServer(models, lifetime_s=180) as srv:
        yield srv


def remote(url: str, path: Path, **kwargs) -> OpenAIEngine:
    return OpenAIEngine(url, str(path), tokenizer=load_tokenizer(path), max_retries=0, **kwargs)


def spans(outputs) -> list[list[tuple[int, int, str]]]:
    return [[(s.start, s.end, s.source) for s in o.spans] for o in outputs]


@pytest.mark.parametrize("concurrency", [1, 8])
def test_chunked_decoder_over_openai_writes_the_in_process_texts(
    dirs, prompts, in_process, server, concurrency
):
    base, small = remote(server.url, dirs["base"]), remote(server.url, dirs["small"])
    before = server.requests
    server.max_in_flight = 0
    dec = ChunkedNudgingDecoder(base, small, concurrency=concurrency, **KW)
    out = dec.decode(*prompts)
    assert [o.text for o in out] == [o.text for o in in_process]  # 12/12, in input order
    assert spans(out) == spans(in_process)
    assert [o.rounds for o in out] == [o.rounds for o in in_process]
    assert sum(o.nudge_tokens for o in out) > 0 and sum(o.base_tokens for o in out) > 0
    assert server.requests - before == dec.calls > len(prompts[0])
    if concurrency == 1:
        assert server.max_in_flight == 1
    else:  # questions overlap: many requests wait at the server at once
        assert server.max_in_flight > 1


def test_a_failing_request_fails_the_decode_in_one_line(dirs, prompts, server):
    base = remote(server.url, dirs["base"])
    unknown = OpenAIEngine(
        server.url, "not-served", tokenizer=load_tokenizer(dirs["small"]), max_retries=0
    )
    dec = ChunkedNudgingDecoder(base, unknown, concurrency=8, **KW)
    before = server.requests
    with pytest.raises(NudgekitError, match="404") as info:
        dec.decode(*prompts)
    assert "\n" not in str(info.value)
    # a worker takes the next question only after its own failed, and the failure stops the
    # rest before their first call: at most one request per worker, not one per question
    assert 1 <= server.requests - before <= 8 < len(prompts[0])


def test_cached_decoder_refuses_an_engine_without_a_model(dirs):
    remote_base = OpenAIEngine("http://127.0.0.1:9", str(dirs["base"]))  # no server needed
    with pytest.raises(NudgekitError, match="decoder=chunked") as info:
        CachedNudgingDecoder(remote_base, engine(dirs["small"]))
    assert "\n" not in str(info.value) and "OpenAIEngine" in str(info.value)


def pipeline(dirs, tmp_path=None, **kwargs) -> NudgingPipeline:
    base, small = ModelSpec(str(dirs["base"])), ModelSpec(str(dirs["small"]))
    defaults = dict(
        base=base,
        nudging=small,
        problems=tiny_problems("test", n=4),
        verifier=load_verifier("tiny"),
        base_prompt=ChatPrompt(base, "tiny", chat=False),
        nudging_prompt=ChatPrompt(small, "tiny"),
        decoder=functools.partial(ChunkedNudgingDecoder, **KW),
        baselines=[],
        max_new_tokens=KW["max_new_tokens"],
    )
    return NudgingPipeline(**{**defaults, **kwargs})


@pytest.mark.parametrize("engine_cls", [OpenAIEngine, VLLMEngine])
def test_pipeline_refuses_resident_only_parts_over_other_engines_before_loading(dirs, engine_cls):
    # never called: the checks read the class (no server, no vLLM here)
    url = {"base_url": "http://127.0.0.1:9"} if engine_cls is OpenAIEngine else {}
    shared = functools.partial(engine_cls, **url)
    with pytest.raises(NudgekitError, match="cached decoder needs the base model.*chunked"):
        pipeline(dirs, decoder=functools.partial(CachedNudgingDecoder), engine=shared)
    large = ModelSpec(str(dirs["large"]))
    with pytest.raises(NudgekitError, match="proxy tuning needs the antiexpert"):
        pipeline(
            dirs,
            antiexpert=large,
            baselines=["proxy_tuning"],
            engines={"antiexpert": shared},
        )


def compose_nudging(overrides: list[str], output_dir: Path | None = None):
    return compose_cfg(["experiment=nudging_tiny", *overrides], output_dir=output_dir)


def test_engine_configs_compose_and_bind():
    for extra in (["engine=vllm"], ["engine=openai", "decoder=chunked", "~decoder.batch_size"]):
        cfg = compose_nudging(extra)
        assert cfg.pipeline.engine._partial_ and validate_targets(cfg) == []


def run_nudging_tiny(dirs, run_dir: Path, overrides: list[str]) -> list[dict]:
    from nudgekit.cli import run

    cfg = compose_nudging(
        [
            f"model.name_or_path={dirs['base']}",
            f"pipeline.nudging.name_or_path={dirs['small']}",
            f"pipeline.aligned_large.name_or_path={dirs['large']}",
            "budget.max_new_tokens=24",
            "decoder=chunked",
            "~decoder.batch_size",
            "decoder.chunk_tokens=8",
            "decoder.gamma=0.4",
            *overrides,
        ],
        output_dir=run_dir,
    )
    run(cfg)
    return [json.loads(x) for x in (run_dir / "nudging.jsonl").read_text().splitlines()]


def test_nudging_tiny_over_two_servers_equals_in_process(dirs, tmp_path, monkeypatch):
    """`engine=openai` with the nudging model on its own server (a per-role override), through
    the CLI: the nudged texts and every baseline's are the in-process run's."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base_models = {str(dirs[k]): engine(dirs[k]) for k in ("base", "large")}
    with (
        OpenAITestServer(base_models, lifetime_s=120) as main,
        OpenAITestServer({str(dirs["small"]): engine(dirs["small"])}, lifetime_s=120) as side,
    ):
        served = run_nudging_tiny(
            dirs,
            tmp_path / "openai",
            [
                "engine=openai",
                f"engine.base_url={main.url}",
                f"pipeline.engines.nudging={{base_url:'{side.url}'}}",
            ],
        )
        assert main.requests > 0 and side.requests > 0
    local = run_nudging_tiny(dirs, tmp_path / "hf", [])
    assert [r["output"] for r in served] == [r["output"] for r in local]
    assert [r["spans"] for r in served] == [r["spans"] for r in local]
    assert [r["baselines"] for r in served] == [r["baselines"] for r in local]


def run_eval_nudging_tiny(dirs, run_dir: Path, overrides: list[str]) -> list[dict]:
    from nudgekit.cli import run

    cfg = compose_cfg(
        [
            "experiment=eval_nudging_tiny",
            f"model.name_or_path={dirs['base']}",
            f"pipeline.nudging.name_or_path={dirs['small']}",
            "budget.max_new_tokens=24",
            "decoder=chunked",
            "decoder.chunk_tokens=8",
            "decoder.gamma=0.4",
            *overrides,
        ],
        output_dir=run_dir,
    )
    run(cfg)
    return [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]


def test_eval_nudging_tiny_over_a_server_equals_in_process(dirs, tmp_path, server, monkeypatch):
    """The nudged eval with both models behind `engine=openai` (the base engine given its
    tokenizer in config, the nudger through `pipeline.nudging_engine`), through the CLI."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = server.url
    served = run_eval_nudging_tiny(
        dirs,
        tmp_path / "openai",
        [
            "engine=openai",
            f"engine.base_url={url}",
            "engine.tokenizer={_target_:nudgekit.models.load_tokenizer,"
            "name_or_path:${model.name_or_path}}",
            "pipeline.nudging_engine={_target_:nudgekit.engines.OpenAIEngine,_partial_:true,"
            f"base_url:'{url}'}}",
        ],
    )
    local = run_eval_nudging_tiny(dirs, tmp_path / "hf", [])
    assert [r["completions"] for r in served] == [r["completions"] for r in local]
    assert [r["spans"] for r in served] == [r["spans"] for r in local]
    assert any(t for r in served for t in r["nudge_tokens"])


def test_nudged_eval_with_the_nudging_model_on_a_server(dirs, prompts, in_process, server):
    base, small = ModelSpec(str(dirs["base"])), ModelSpec(str(dirs["small"]))
    problems = tiny_problems("test", n=12)
    pipe = EvalPipeline(
        engine=engine(dirs["base"]),  # in process, calls serialised; the nudger's overlap
        problems=problems,
        verifier=load_verifier("tiny"),
        prompt=ChatPrompt(base, "tiny", chat=False),
        decoder=functools.partial(ChunkedNudgingDecoder, gamma=0.4, chunk_tokens=8),
        nudging=small,
        nudging_prompt=ChatPrompt(small, "tiny"),
        nudging_engine=functools.partial(OpenAIEngine, base_url=server.url, max_retries=0),
        max_new_tokens=KW["max_new_tokens"],
        n=1,
        temperature=0.0,
    )
    records = pipe.sample()
    assert [r["completions"][0] for r in records] == [o.text for o in in_process]


@dataclass
class WatchedSpec(ModelSpec):
    """A `ModelSpec` that notes, each time it loads, which earlier-loaded models are still alive
    (weak references: a model freed by the pipeline is gone once garbage-collected)."""

    role: str = ""
    log: list | None = None

    def load_model(self):
        alive = sorted({r for r, ref in self.log if r != "event" and ref() is not None})
        self.log.append(("event", (self.role, alive)))
        model = super().load_model()
        self.log.append((self.role, weakref.ref(model)))
        return model


def test_models_are_freed_before_the_next_baseline_loads(dirs, tmp_path):
    """base + nudger (nudging, base-only, nudger-only), + anti-expert (proxy tuning), then
    aligned-large alone: each loaded once, and nothing else alive when aligned-large loads."""
    log: list = []

    def spec(key: str, role: str) -> WatchedSpec:
        return WatchedSpec(str(dirs[key]), role=role, log=log)

    base, nudger = spec("base", "base"), spec("large", "nudging")  # one vocabulary: proxy works
    pipe = pipeline(
        dirs,
        base=base,
        nudging=nudger,
        base_prompt=ChatPrompt(base, "tiny", chat=False),
        nudging_prompt=ChatPrompt(nudger, "tiny", chat=False),
        antiexpert=spec("base", "antiexpert"),
        aligned_large=spec("small", "aligned_large"),
        aligned_prompt=ChatPrompt(ModelSpec(str(dirs["small"])), "tiny"),
        decoder=functools.partial(CachedNudgingDecoder, **KW),
        baselines=["base_only", "nudger_only", "aligned_large", "proxy_tuning"],
        max_new_tokens=8,
    )
    metrics = pipe.run(None, tmp_path)
    events = [e for r, e in log if r == "event"]
    assert events == [
        ("base", []),
        ("nudging", ["base"]),
        ("antiexpert", ["base", "nudging"]),
        ("aligned_large", []),  # base, nudger and anti-expert were freed first
    ]
    assert all(ref() is None for r, ref in log if r != "event")  # all freed after the run
    assert list(metrics)[-4:] == [
        "base_only/accuracy",
        "nudger_only/accuracy",
        "aligned_large/accuracy",
        "proxy_tuning/accuracy",
    ]
