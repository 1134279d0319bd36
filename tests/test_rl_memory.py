"""Precision and memory of the update (issue 17, part 2).

- `selective_logprobs` (blocked log-softmax) equals the plain fp32 `log_softmax` path in values,
  entropies and gradients w.r.t. the logits, for fp32 and bf16 logits, T = 1 and T = 0.7, with
  blocks that cut rows apart and blocks that hold several rows. Measured max differences
  (logits ~ N(0, 2^2), V = 1000, 111 positions): log-probs 1.9e-6 (relative 2e-7), entropy
  3.8e-6 (relative 8e-7), fp32 gradients 1.2e-6 (|g| up to 3.7); bf16 gradients differ by at
  most one bf16 ulp (3.1e-5). Tested at atol 1e-6 + rtol 1e-6 (values), atol 2e-6 + rtol 1e-6
  (fp32 gradients), atol 1e-6 + rtol 2^-7 (bf16 gradients). It saves only the logits (their
  own dtype) and one fp32 value per position for backward, and its peak memory is the bf16
  gradient plus a few blocks (`test_peak_rss_...`, a fresh process per path).
- Gradient checkpointing through the real trainer: same loss and gradients as without it. The
  shared-prompt KV-cache path does not combine with it (transformers drops the cache in
  checkpointed layers), so the gradient pass falls back to full rows; no-grad passes still share.
- DeepSpeed's bf16 follows the model dtype (config), and a bf16 ZeRO-2 step runs on CPU with
  fp32 master weights (one process, DS_ACCELERATOR=cpu, gloo).
- Checkpoints: keep-last-k, weights-only (loadable as an HF model, refused on resume), and the
  NuRL hint store beside the trainer state (older checkpoints with it inside still resume).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.torchrun import cpu_env, free_port

from nudgekit.errors import NudgekitError
from nudgekit.rl import DeepSpeedBackend, token_logprobs
from nudgekit.rl.checkpoint import STATE_FILE
from nudgekit.rl.logprobs import shared_prefix_logprobs
from nudgekit.rl.manifest import verify, write_manifest
from nudgekit.rl.precision import checkpointing_active, ds_precision
from nudgekit.rl.selective import blocks, chunked_entropy, selective_logprobs
from nudgekit.rl.steps import logprob_fn

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def full_fp32(logits, ids, temperature, entropy):
    """The path `selective_logprobs` replaced: fp32 log-softmax over the whole `[N, L, V]`."""
    x = logits.float()
    if temperature not in (0.0, 1.0):
        x = x / temperature
    logp = torch.log_softmax(x, dim=-1)
    lp = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        ent = -(logp.exp() * logp).sum(-1) if entropy else None
    return lp, ent


def _inputs(dtype, rows=3, length=37, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, length, vocab, generator=g) * 2).to(dtype)
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    weights = torch.randn(rows, length, generator=g)  # a loss that weights every position
    return logits, ids, weights


def _value_and_grad(fn, logits, ids, weights, temperature, **kw):
    x = logits.clone().requires_grad_()
    lp, ent = fn(x, ids, temperature, True, **kw)
    (lp * weights).sum().backward()
    return lp.detach(), ent, x.grad


@pytest.mark.parametrize("positions", [5, 80, 10_000])  # rows cut apart / 2 rows / one block
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_equals_full_fp32_log_softmax(dtype, temperature, positions):
    logits, ids, weights = _inputs(dtype)
    lp0, ent0, g0 = _value_and_grad(full_fp32, logits, ids, weights, temperature)
    lp, ent, g = _value_and_grad(
        selective_logprobs,
        logits,
        ids,
        weights,
        temperature,
        block_elements=positions * logits.shape[-1],
    )
    assert lp.dtype == ent.dtype == torch.float32 and g.dtype == dtype and not ent.requires_grad
    torch.testing.assert_close(lp, lp0, atol=1e-6, rtol=1e-6)  # |log p| up to ~20 here
    torch.testing.assert_close(ent, ent0, atol=1e-6, rtol=1e-6)
    if dtype == torch.float32:
        torch.testing.assert_close(g, g0, atol=2e-6, rtol=1e-6)
    else:  # both round the same fp32 gradient to bf16
        torch.testing.assert_close(g.float(), g0.float(), atol=1e-6, rtol=2**-7)
    assert selective_logprobs(logits, ids, temperature, False)[1] is None


def test_blocks_cover_every_position_once():
    for rows, length, positions in [(3, 37, 5), (3, 37, 80), (4, 1, 3), (2, 0, 4), (5, 8, 8)]:
        seen = torch.zeros(rows, length, dtype=torch.long)
        for r, c in blocks(rows, length, positions):
            assert seen[r, c].numel() <= positions
            seen[r, c] += 1
        assert bool((seen == 1).all()), (rows, length, positions)


def test_chunked_entropy_matches_and_handles_any_leading_shape():
    logits, _, _ = _inputs(torch.float32, rows=2, length=5, vocab=50)
    ref = full_fp32(logits, torch.zeros(2, 5, dtype=torch.long), 1.0, True)[1]
    torch.testing.assert_close(
        chunked_entropy(logits, block_elements=3 * 50), ref, atol=2e-6, rtol=0
    )
    assert chunked_entropy(logits[0, 0]).shape == ()


def _saved_bytes(fn, logits, ids) -> int:
    """Bytes of the tensors autograd keeps for backward of `fn` (excluding the leaf input's)."""
    total, leaf = [0], logits.untyped_storage().data_ptr()

    def pack(t):
        if t.untyped_storage().data_ptr() != leaf:
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(logits, ids, 0.7, True)
    return total[0]


def test_nothing_full_size_in_fp32_is_kept_for_backward():
    logits, ids, _ = _inputs(torch.bfloat16, rows=2, length=64, vocab=4096)
    logits.requires_grad_()
    full = logits.numel() * 4
    # the plain path keeps its fp32 log-softmax; the blocked one the bf16 logits (the leaf,
    # not counted) plus an fp32 log-normaliser and the ids per position
    assert _saved_bytes(full_fp32, logits, ids) >= full
    assert _saved_bytes(selective_logprobs, logits, ids) <= ids.numel() * 12


# Run in a fresh process per path; it loads only torch and `selective.py` (by file path), so
# each run takes ~2 s. The peak is Linux's VmHWM after resetting it to the current RSS
# (/proc/self/clear_refs), so pages touched while importing do not hide the growth.
_PEAK = """
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("selective", sys.argv[1])
selective = importlib.util.module_from_spec(spec)
spec.loader.exec_module(selective)
which, rows, length, vocab, block = sys.argv[2], *map(int, sys.argv[3:])
def plain(logits, ids, t, entropy):  # the replaced code, as it was
    logits = logits.float()
    logits = logits / t
    logp = torch.log_softmax(logits, dim=-1)
    lp = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        ent = -(logp.exp() * logp).sum(-1)
    return lp, ent
def blocked(logits, ids, t, entropy):
    return selective.selective_logprobs(logits, ids, t, entropy, block_elements=block)
fn = plain if which == "plain" else blocked
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
logits = torch.empty(rows, length, vocab, dtype=torch.bfloat16).normal_(generator=g)
logits.requires_grad_()  # (filled in place: no fp32 temporary raises the high-water mark)
ids = torch.randint(0, vocab, (rows, length), generator=g)
warm = logits[:1, :2].detach().requires_grad_()
fn(warm, ids[:1, :2], 0.7, True)[0].sum().backward()
def kib(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
before = kib("VmRSS:")
fn(logits, ids, 0.7, True)[0].sum().backward()
print((kib("VmHWM:") - before) / 1024)
"""


def peak_rss_mib(which: str, rows: int, length: int, vocab: int, block_elements: int) -> float:
    """Peak RSS growth (MiB) of forward + backward (T = 0.7, entropy on) of the plain fp32 path
    or the blocked one, on bf16 logits `[rows, length, vocab]`, in a fresh process."""
    selective = ROOT / "nudgekit" / "rl" / "selective.py"
    args = [str(selective), which, str(rows), str(length), str(vocab), str(block_elements)]
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_rss_of_forward_and_backward_is_a_fraction_of_the_fp32_path():
    # 2 x 512 positions, V = 32768: bf16 logits 64 MiB, one fp32 copy 128 MiB; blocks of 2^21
    # fp32 elements (8 MiB). Measured: plain 512 MiB (four fp32 copies live at once), blocked
    # 107-112 MiB (the logits' bf16 gradient, 64 MiB, plus blocks and allocator slack). At
    # 8 x 512 positions and the default 64 MiB blocks: 2048 MiB vs 352 MiB (256 MiB gradient).
    shape = (2, 512, 32768, 1 << 21)
    plain, blocked = peak_rss_mib("plain", *shape), peak_rss_mib("blocked", *shape)
    assert plain >= 3 * 128, plain
    assert blocked <= 64 + 96 and blocked < plain / 3, (plain, blocked)


# ------------------------------------------------------------------ gradient checkpointing


def _update_grads(model_dir, checkpointing: bool):
    """One real GRPO step of the trainer; returns its loss and the summed parameter gradients
    of the update's backward passes (captured by parameter hooks)."""
    from helpers.rl.build import make_trainer

    trainer = make_trainer(
        model_dir,
        gradient_checkpointing=checkpointing,
        max_steps=1,
        micro_batch_size=8,
        resume=None,
    )
    trainer.setup(model_dir.parent / f"run-gc{int(checkpointing)}")
    grads: dict[str, torch.Tensor] = {}
    for name, p in trainer.backend.module.named_parameters():
        p.register_hook(lambda g, n=name: grads.__setitem__(n, grads.get(n, 0) + g.clone()))
    metrics = trainer.train_step()
    module = trainer.backend.module
    trainer.cleanup()
    return metrics, grads, module


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_qwen_dir, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(tiny_qwen_dir, model_dir)
    plain, g0, _ = _update_grads(model_dir, False)
    ckpt, g1, module = _update_grads(model_dir, True)
    assert checkpointing_active(module)
    assert plain["train/reward"] == ckpt["train/reward"]  # the same rollouts
    assert abs(plain["train/loss"] - ckpt["train/loss"]) < 1e-6
    assert g0.keys() == g1.keys() and len(g0) > 0
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-6, rtol=1e-4, msg=name)
    # the gradient pass runs full rows under checkpointing; no-grad passes still share prompts
    assert logprob_fn(module, True) is token_logprobs
    with torch.no_grad():
        assert logprob_fn(module, True) is shared_prefix_logprobs


def test_shared_prompt_cache_is_dropped_under_checkpointing(tiny_qwen_dir):
    """Why the fallback exists: with checkpointing on, the shared-prompt path's gradient pass
    loses the prompt (transformers sets the cache to None in checkpointed layers)."""
    from test_rl_logprobs import _batch

    from nudgekit.models import load_model
    from nudgekit.rl.precision import enable_gradient_checkpointing

    model, batch = load_model(str(tiny_qwen_dir)).train(), _batch()
    mask = batch.completion_mask.bool()
    ref, _ = token_logprobs(model, batch, 0.7)
    enable_gradient_checkpointing(model)
    broken, _ = shared_prefix_logprobs(model, batch, 0.7)
    assert (broken - ref)[mask].abs().max() > 1.0
    with torch.no_grad():
        fine, _ = shared_prefix_logprobs(model, batch, 0.7)
    torch.testing.assert_close(fine[mask], ref.detach()[mask], atol=2e-5, rtol=0)


# ------------------------------------------------------------------ DeepSpeed bf16


def test_deepspeed_precision_follows_the_model_dtype():
    backend = DeepSpeedBackend(zero_stage=2)
    bf16 = backend.ds_config(2, 4, 1, torch.bfloat16)
    fp32 = backend.ds_config(2, 4, 1, torch.float32)
    assert bf16["bf16"] == {"enabled": True} and bf16["fp16"] == {"enabled": False}
    assert fp32["bf16"] == {"enabled": False} and fp32["fp16"] == {"enabled": False}
    assert ds_precision(torch.float16)["fp16"] == {"enabled": True}
    forced = DeepSpeedBackend(zero_stage=2, config={"bf16": {"enabled": False}})
    assert forced.ds_config(2, 4, 1, torch.bfloat16)["bf16"] == {"enabled": False}


def test_deepspeed_bf16_step_on_cpu_keeps_fp32_master_weights(tiny_qwen_dir, tmp_path):
    env = cpu_env(
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
    )
    worker = ROOT / "tests" / "helpers" / "rl" / "bf16_worker.py"
    out = subprocess.run(
        [sys.executable, str(worker), str(tiny_qwen_dir), str(tmp_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["bf16_enabled"] and got["param_dtype"] == "torch.bfloat16"
    assert got["master_dtype"] == "torch.float32"
    assert got["moved"] > 0 and got["loss_finite"]


# ------------------------------------------------------------------ checkpoints


def test_keep_last_k_and_weights_only_checkpoints(tiny_qwen_dir, tmp_path):
    from helpers.rl.build import make_trainer
    from transformers import AutoModelForCausalLM

    with pytest.raises(NudgekitError, match="checkpoint.keep must be >= 1"):
        make_trainer(tiny_qwen_dir, keep_checkpoints=0)
    trainer = make_trainer(
        tiny_qwen_dir, max_steps=2, save_every=1, keep_checkpoints=1, checkpoint_weights_only=True
    )
    trainer.setup(tmp_path)
    trainer.train()
    final = trainer.backend.full_state_dict()
    trainer.cleanup()
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000002"]  # keep-last-1
    step = ckpts / "step-000002"
    assert not (step / "torch_state.pt").exists() and not (step / "rng-rank0.pt").exists()
    assert verify(step) is None and json.loads((step / STATE_FILE).read_text())["weights_only"]
    loaded = AutoModelForCausalLM.from_pretrained(step / "model").state_dict()
    assert all(torch.equal(loaded[k], final[k]) for k in final)
    for resume in (str(step), "auto"):
        again = make_trainer(tiny_qwen_dir, resume=resume, checkpoint_dir=str(ckpts))
        with pytest.raises(NudgekitError, match="weights-only checkpoint") as err:
            again.setup(tmp_path / "again")
        assert "\n" not in str(err.value)


def test_nurl_hint_store_sits_beside_the_state_and_old_checkpoints_resume(tiny_qwen_dir, tmp_path):
    from helpers.nurl import CountingSource, hint_store, make_nurl

    trainer = make_nurl(
        tiny_qwen_dir,
        stage1_max_steps=1,
        stage2_steps=0,
        save_every=1,
        keep_checkpoints=None,
        filter_n=1,
    )
    trainer.setup(tmp_path / "run")
    trainer.train()
    trainer.cleanup()
    step0 = tmp_path / "run" / "checkpoints" / "step-000000"
    state = json.loads((step0 / STATE_FILE).read_text())
    assert "hints" not in state["extra_state"] and state["extra_state"]["hint_count"] == 2
    rows = [json.loads(line) for line in (step0 / "hints.jsonl").read_text().splitlines()]
    assert {r["id"]: r["hint"] for r in rows} == hint_store().hints()
    # an older checkpoint: the store inside trainer_state.json, no hints.jsonl
    legacy = tmp_path / "legacy" / "checkpoints" / "step-000000"
    shutil.copytree(step0, legacy)
    (legacy / "hints.jsonl").unlink()
    del state["extra_state"]["hint_count"]
    state["extra_state"]["hints"] = rows
    (legacy / STATE_FILE).write_text(json.dumps(state))
    write_manifest(legacy, step=0)
    source = CountingSource(hint_store())
    again = make_nurl(
        tiny_qwen_dir, hints=source, stage1_max_steps=1, stage2_steps=0, resume="auto", filter_n=1
    )
    again.setup(tmp_path / "legacy")
    assert again.schedule.injector.store.hints() == hint_store().hints()
    assert "hints" not in again.extra_state() and again.extra_state()["hint_count"] == 2
    again.train()
    again.cleanup()
    assert source.calls == 0  # the store came from the old checkpoint
    newest = tmp_path / "legacy" / "checkpoints" / "step-000001"
    assert (newest / "hints.jsonl").read_text() == (step0 / "hints.jsonl").read_text()
