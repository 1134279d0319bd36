"""The vLLM tier: `VLLMEngine` against `HFEngine` on zoo models, and live weight sync.

Runs only where vLLM is installed (`make test-vllm`: the CPU build in `.venv-vllm`); elsewhere
the module is skipped. Both engines run float32 on the same checkpoint, so greedy ids must be
equal and log-probs agree to float rounding (1e-4). Sampled ids come from different RNGs, so
vLLM's sampled log-probs are checked against a teacher-forced forward of the HF model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")

from nudgekit.engines import GenerationRequest, HFEngine, VLLMEngine  # noqa: E402
from nudgekit.errors import NudgekitError  # noqa: E402
from nudgekit.models import ModelSpec, load_model, load_tokenizer, resolve_model_path  # noqa: E402
from nudgekit.models.random_init import build_tiny_model  # noqa: E402
from nudgekit.zoo.prompts import render_chat  # noqa: E402
from nudgekit.zoo.registry import is_built  # noqa: E402
from nudgekit.zoo.tasks import chains  # noqa: E402

pytestmark = pytest.mark.vllm

ATOL = 1e-4
# vLLM's CPU attention takes head sizes 32, 64, 80, ...: the `@test` zoo models (d=32, 2 heads)
# have 16, so the tier builds them through the zoo's own build code at d=64 (head size 32).
ZOO = {"qwen2": "tiny-policy@test", "llama": "tiny-base-large@test"}
FULL_POLICY = "tiny-policy"  # head size 32 as built; used when it is in the zoo cache


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Models with head size 32: zoo-built ones (zoo tokenizers, tied embeddings, a few SFT
    steps: their greedy text is mostly one repeated token) and a random-init Qwen2 whose
    peaked next-token distributions give varied text (untied, byte-level BPE)."""
    from nudgekit.zoo.build import build_into
    from nudgekit.zoo.registry import spec_of

    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for arch, name in ZOO.items():
        build_into(name, replace(spec_of(name), hidden=64), root / arch, progress=False)
        dirs[f"zoo-{arch}"] = root / arch
    dirs["random-qwen2"] = build_tiny_model(root / "random", hidden_size=64, num_heads=2)
    return dirs


def _models() -> list:
    full = pytest.param(
        "zoo-full-policy",
        marks=pytest.mark.skipif(not is_built(FULL_POLICY), reason=f"{FULL_POLICY} not built"),
    )
    return ["zoo-qwen2", "zoo-llama", "random-qwen2", full]


@pytest.fixture(scope="module", params=_models())
def pair(request, model_dirs):
    """(VLLMEngine, HFEngine, prompts) on one model, both float32."""
    path = model_dirs.get(request.param) or resolve_model_path(f"zoo:{FULL_POLICY}")
    vllm_engine = VLLMEngine(ModelSpec(str(path)))
    hf = HFEngine(ModelSpec(str(path)))
    yield vllm_engine, hf, _prompts(hf.tokenizer)
    vllm_engine.close()


def _prompts(tokenizer, k: int = 4) -> list[str]:
    """Zoo task questions: chat-rendered when the tokenizer has a template, else plain."""
    questions = [c.question for c in chains("test", 2)[:k]]
    if tokenizer.chat_template:
        return [render_chat(tokenizer, q) for q in questions]
    return [f"Question: {q}\nAnswer:" for q in questions]


def _teacher_forced(model, prompt_ids, ids, temperature=1.0):
    """Log-probs of `ids` and the top-1 (ids, log-probs) at each position, one forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1 : -1]
    lp = (logits.float() / temperature).log_softmax(-1)
    top_lp, top_ids = lp.max(-1)
    return lp.gather(-1, torch.tensor(ids)[:, None]).squeeze(-1), top_ids, top_lp


def _max_diff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def _greedy(prompts, max_new_tokens=24, **kw):
    return [
        GenerationRequest(
            p, max_new_tokens=max_new_tokens, temperature=0, logprobs=True, top_logprobs=True, **kw
        )
        for p in prompts
    ]


def test_device_is_vllms_platform(pair):
    from vllm.platforms import current_platform

    assert pair[0].device == current_platform.device_type


def test_greedy_matches_hf(pair):
    vllm_engine, hf, prompts = pair
    worst = 0.0
    for v, h in zip(vllm_engine.generate(_greedy(prompts)), hf.generate(_greedy(prompts))):
        assert v.prompt_ids == h.prompt_ids
        (vs,), (hs,) = v.samples, h.samples
        assert (vs.token_ids, vs.text, vs.finish_reason) == (
            hs.token_ids,
            hs.text,
            hs.finish_reason,
        )
        assert vs.top_token_ids == hs.top_token_ids == vs.token_ids
        worst = max(worst, _max_diff(vs.logprobs, hs.logprobs))
        worst = max(worst, _max_diff(vs.top_logprobs, hs.top_logprobs))
    print(f"greedy: max |vLLM - HF| log-prob {worst:.2e}")
    assert worst <= ATOL


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_match_teacher_forced_hf(pair, temperature):
    vllm_engine, hf, prompts = pair
    reqs = [
        GenerationRequest(
            p, n=3, max_new_tokens=16, temperature=temperature, seed=5, logprobs=True,
            top_logprobs=True,
        )
        for p in prompts
    ]  # fmt: skip
    worst = 0.0
    for res in vllm_engine.generate(reqs):
        assert len(res.samples) == 3
        for s in res.samples:
            lp, top_ids, top_lp = _teacher_forced(
                hf.model, res.prompt_ids, s.token_ids, temperature
            )
            assert s.top_token_ids == top_ids.tolist()
            worst = max(worst, _max_diff(s.logprobs, lp), _max_diff(s.top_logprobs, top_lp))
    print(f"T={temperature}: max |vLLM - teacher-forced HF| log-prob {worst:.2e}")
    assert worst <= ATOL


def test_seeded_requests_over_the_token_budget(pair):
    """More prompt tokens than vLLM's per-step budget: on CPU a chunked prefill of a seeded
    request would rewind its generator, which CPU generators cannot (the engine turns chunked
    prefill off there), so all samples come back and the seeds still decide them."""
    vllm_engine, _, prompts = pair
    budget = vllm_engine.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    ids = vllm_engine.tokenizer(prompts[0]).input_ids
    copies = budget // len(ids) + 2
    # distinct first tokens: no shared prefix cache, every prompt is prefilled in full
    reqs = [
        GenerationRequest(
            prompt=f"{s} {prompts[0]}", n=2, max_new_tokens=3, temperature=1.0, seed=s
        )
        for s in range(copies)
    ]
    out = vllm_engine.generate(reqs)
    assert [len(r.samples) for r in out] == [2] * copies
    again = vllm_engine.generate(reqs[:2])
    assert [s.token_ids for s in again[0].samples] == [s.token_ids for s in out[0].samples]


def test_n_and_seeds(pair):
    vllm_engine, _, prompts = pair

    def ids(seed):  # T=2 (vLLM's cap): the trained policy is near-deterministic at T=1
        reqs = [
            GenerationRequest(p, n=4, max_new_tokens=12, seed=seed, temperature=2.0)
            for p in prompts
        ]
        return [[s.token_ids for s in r.samples] for r in vllm_engine.generate(reqs)]

    one, again, two = ids(1), ids(1), ids(2)
    assert all(len(samples) == 4 for samples in one)
    assert one == again and one != two
    assert any(
        len({tuple(i) for i in samples}) > 1 for samples in one
    )  # samples of a request differ


def test_temperature_over_vllms_cap_is_a_user_error(pair):
    with pytest.raises(NudgekitError, match="vllm engine: temperature must be in"):
        pair[0].generate([GenerationRequest(pair[2][0], temperature=3.0)])


def test_text_and_id_prompts_agree(pair):
    vllm_engine, hf, prompts = pair
    (by_text,) = vllm_engine.generate(_greedy(prompts[:1]))
    (by_ids,) = vllm_engine.generate(_greedy([by_text.prompt_ids]))
    assert (
        by_ids.prompt_ids == by_text.prompt_ids == hf.generate(_greedy(prompts[:1]))[0].prompt_ids
    )
    assert by_ids.samples[0].token_ids == by_text.samples[0].token_ids


def test_stop_strings_cut_text_like_hf(pair):
    vllm_engine, hf, prompts = pair
    checked = 0
    for prompt, free in zip(prompts, vllm_engine.generate(_greedy(prompts, 32))):
        text = free.samples[0].text
        stop = next(
            (text[i : i + 2] for i in range(1, len(text) - 2) if "\ufffd" not in text[i : i + 2]),
            None,
        )
        if stop is None:
            continue
        reqs = _greedy([prompt], 32, stop=["@@never@@", stop])
        (v,), (h,) = vllm_engine.generate(reqs)[0].samples, hf.generate(reqs)[0].samples
        assert v.finish_reason == h.finish_reason == "stop"
        assert v.text == h.text == text[: text.index(stop)]
        assert v.token_ids == h.token_ids == free.samples[0].token_ids[: len(v.token_ids)]
        checked += 1
    assert checked >= 2


def test_length_and_eos_finish_like_hf(pair, tmp_path):
    vllm_engine, hf, prompts = pair
    (free,) = vllm_engine.generate(_greedy(prompts[:1], 6))[0].samples
    assert (len(free.token_ids), free.finish_reason) == (6, "length")
    # declare a greedy token an EOS in a copy of the model (the latest one not seen before it,
    # so the sample must run up to it): both engines end there, EOS id kept, not in the text
    ids = free.token_ids
    k = max(i for i in range(len(ids)) if ids[i] not in ids[:i])
    dst = shutil.copytree(vllm_engine.model_path, tmp_path / "eos")
    gen = json.loads((dst / "generation_config.json").read_text())
    gen["eos_token_id"] = [gen["eos_token_id"], ids[k]]
    (dst / "generation_config.json").write_text(json.dumps(gen))
    reqs = _greedy(prompts[:1], 8)
    eos_vllm = VLLMEngine(ModelSpec(str(dst)))
    (v,) = eos_vllm.generate(reqs)[0].samples
    eos_vllm.close()  # the other engine keeps running (test_sleep_is_a_no_op_on_cpu uses it)
    (h,) = HFEngine(ModelSpec(str(dst))).generate(reqs)[0].samples
    assert (v.token_ids, v.finish_reason) == (h.token_ids, h.finish_reason) == (ids[: k + 1], "eos")
    assert v.text == h.text == hf.tokenizer.decode(ids[:k], skip_special_tokens=True)


def _train_step(model, tokenizer, lr=0.05) -> float:
    """One AdamW step of next-token loss on a fixed text; returns the loss."""
    ids = torch.tensor(
        [tokenizer("Start 3: inc inc dec. Answer: 4", add_special_tokens=False).input_ids]
    )
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    model.eval()
    return float(loss.detach())


@pytest.mark.parametrize("source", ["zoo-tied", "tiny-untied"])
def test_weight_sync_after_an_optimizer_step(source, model_dirs, tmp_path):
    path = (
        model_dirs["zoo-qwen2"]
        if source == "zoo-tied"
        else build_tiny_model(tmp_path / "m", arch="llama", hidden_size=64, num_heads=2)
    )
    model, tokenizer = load_model(path), load_tokenizer(path)
    tied = model.lm_head.weight is model.get_input_embeddings().weight
    assert tied == (source == "zoo-tied")
    engine = VLLMEngine(ModelSpec(str(path)))
    prompts = _prompts(tokenizer)
    reqs = _greedy(prompts, 16)

    def outputs(results):
        return [(s.token_ids, s.text) for r in results for s in r.samples]

    def logprobs(results):
        return [s.logprobs for r in results for s in r.samples]

    before = engine.generate(reqs)
    hf = HFEngine(model, tokenizer)
    assert outputs(before) == outputs(hf.generate(reqs))
    embed_before = model.get_input_embeddings().weight.detach().clone()
    _train_step(model, tokenizer)
    assert not torch.equal(embed_before, model.get_input_embeddings().weight)
    trained = hf.generate(reqs)
    assert outputs(trained) != outputs(before)  # the step changed what the model says
    assert outputs(engine.generate(reqs)) == outputs(before)  # vLLM keeps the old weights

    engine.sync_weights(model)
    after = engine.generate(reqs)
    assert outputs(after) == outputs(trained)
    diff = max(_max_diff(a, b) for a, b in zip(logprobs(after), logprobs(trained)))
    print(f"{source}: after sync, max |vLLM - HF| greedy log-prob {diff:.2e}")
    assert diff <= ATOL
    # every position, not only the greedy path: teacher-forced sampled log-probs
    sampled = engine.generate(
        [GenerationRequest(p, n=2, max_new_tokens=12, seed=3, logprobs=True) for p in prompts]
    )
    for res in sampled:
        for s in res.samples:
            lp, _, _ = _teacher_forced(model, res.prompt_ids, s.token_ids)
            assert _max_diff(s.logprobs, lp) <= ATOL
    engine.close()


def test_a_dropped_engine_spares_the_others(pair):
    import gc

    vllm_engine, _, prompts = pair
    reqs = _greedy(prompts[:2], 8)
    before = [r.samples[0].token_ids for r in vllm_engine.generate(reqs)]
    other = VLLMEngine(ModelSpec(vllm_engine.model_path))
    assert [r.samples[0].token_ids for r in other.generate(reqs)] == before
    del other  # vLLM's own teardown would destroy the parallel state both engines use
    gc.collect()
    assert [r.samples[0].token_ids for r in vllm_engine.generate(reqs)] == before


def test_sleep_is_a_no_op_on_cpu(pair):
    vllm_engine = pair[0]
    if vllm_engine.device != "cpu":
        pytest.skip("GPU: sleep mode is real there")
    assert vllm_engine.sleep() is False and vllm_engine.wake_up() is False
    assert vllm_engine.generate(_greedy(pair[2][:1], 4))[0].samples[0].finish_reason == "length"
