"""GPU smoke (`make gpu-smoke`): the checks a lent CUDA machine answers in a few minutes.

One line per check, `PASS|FAIL|SKIP <check> <seconds> <detail>`, and exit status 1 on any FAIL:

- engine_parity: `HFEngine` and `VLLMEngine` on one model (`--parity-dtype`, float32): greedy ids
  equal, log-probs within `--parity-atol`;
- grpo_tiny: `run.py experiment=grpo_tiny`, 5 steps on cuda in bfloat16 (the `@test` zoo policy
  when the full one is not built); 2 steps on cpu, float32, `debug=tiny`;
- zero2 / zero3: the same under 2-process torchrun with DeepSpeed ZeRO-2 / ZeRO-3 (>= 2 GPUs;
  on cpu only with `--cpu-zero`, gloo);
- nurl_vllm: `experiment=nurl_qwen` shaped down onto a local model dir, 3 steps, `engine=vllm`
  rollouts with weight sync (passes only if the run logged `perf/weight_sync_s`).

Every check is its own subprocess under its own timeout, and the timeouts shrink to what is left
of `--budget-s`. Without CUDA (or with `--device cpu`) the same checks run reduced on the CPU;
vLLM checks are skipped where `vllm` is not importable by this interpreter.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ("engine_parity", "grpo_tiny", "zero2", "zero3", "nurl_vllm")
TIMEOUTS = {"engine_parity": 180, "grpo_tiny": 180, "zero2": 180, "zero3": 180, "nurl_vllm": 240}
RANK_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


@dataclass(frozen=True)
class Result:
    status: str  # PASS | FAIL | SKIP
    check: str
    seconds: float
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.check} {self.seconds:.1f} {self.detail}"


@dataclass
class Machine:
    """What this machine offers (decided once)."""

    device: str  # "cuda" | "cpu"
    n_gpus: int
    has_vllm: bool
    cpu_zero: bool = False
    python: str = sys.executable
    out: Path = ROOT / "outputs" / "gpu_smoke"
    model_dir: str | None = None
    parity_dtype: str = "float32"
    extra: dict[str, list[str]] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def skip_reason(check: str, m: Machine) -> str | None:
    """Why `check` cannot run on `m` (None: it runs). Pure."""
    if check in ("engine_parity", "nurl_vllm") and not m.has_vllm:
        return "vllm not importable by this interpreter (GPU: make install-gpu; CPU: .venv-vllm)"
    if check in ("zero2", "zero3"):
        if m.cuda and m.n_gpus < 2:
            return f"needs >= 2 CUDA GPUs (found {m.n_gpus})"
        if not m.cuda and not m.cpu_zero:
            return "no CUDA (--cpu-zero runs it on gloo)"
    return None


def summarise(status: str, check: str, t0: float, detail: str) -> Result:
    return Result(status, check, time.perf_counter() - t0, " ".join(detail.split()))


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`(returncode, output tail)`; returncode 124 when the timeout killed it."""
    inherited = {k: v for k, v in os.environ.items() if k not in RANK_KEYS}  # checks own theirs
    full_env = {**inherited, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env or {})}
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=max(timeout, 1)
        )
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"") + (err.stderr or b"")
        return 124, out.decode(errors="replace") if isinstance(out, bytes) else str(out)
    return proc.returncode, proc.stdout + proc.stderr


def last_error(output: str) -> str:
    """The most telling line of a failed run's output (its last error-looking line)."""
    lines = [x.strip() for x in output.splitlines()
             if x.strip() and "HYDRA_FULL_ERROR" not in x]  # fmt: skip
    for line in reversed(lines):
        if "error" in line.lower() or "Traceback" in line:
            return line[:240]
    return lines[-1][:240] if lines else "(no output)"


# --- model dir for the vLLM checks -----------------------------------------------------------


def model_dir(m: Machine) -> tuple[str, str]:
    """`(path, what)`: `--model-dir`, else the zoo's tiny-policy when built, else a random tiny
    Qwen2 (head size 32, which vLLM's attention takes) built here in seconds."""
    if m.model_dir:
        return m.model_dir, "model-dir"
    from nudgekit.models import resolve_model_path
    from nudgekit.zoo.registry import is_built

    if is_built("tiny-policy"):
        return resolve_model_path("zoo:tiny-policy"), "zoo:tiny-policy"
    from nudgekit.models.random_init import build_tiny_model

    path = m.out / "random-qwen2"
    if not (path / "config.json").is_file():
        build_tiny_model(path, hidden_size=64, num_heads=2)
    return str(path), "random-qwen2"


# --- checks ----------------------------------------------------------------------------------


def check_engine_parity(m: Machine, timeout: float, atol: float) -> Result:
    t0 = time.perf_counter()
    path, what = model_dir(m)
    cmd = [m.python, __file__, "--worker", "parity", "--model-dir", path, "--device", m.device,
           "--parity-dtype", m.parity_dtype]  # fmt: skip
    rc, out = run(cmd, timeout, None if m.cuda else VLLM_CPU_ENV)
    if rc != 0:
        return summarise("FAIL", "engine_parity", t0, f"rc={rc} {last_error(out)}")
    rec = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    ok = rec["greedy_equal"] and rec["max_logprob_diff"] <= atol
    detail = (
        f"model={what} device={m.device} dtype={m.parity_dtype} prompts={rec['prompts']} greedy_equal={rec['greedy_equal']}"
        f" max|dlogprob|={rec['max_logprob_diff']:.2e} (atol {atol:g})"
    )
    return summarise("PASS" if ok else "FAIL", "engine_parity", t0, detail)


def grpo_overrides(m: Machine, steps: int) -> list[str]:
    """run.py overrides of the grpo_tiny check (pure)."""
    if m.cuda:
        return [
            f"budget.steps={steps}",
            "model.device=cuda",
            "model.dtype=bfloat16",
            "logger=disabled",
        ]
    return [f"budget.steps={steps}", "debug=tiny", "model.device=cpu", "model.dtype=float32"]


def fresh(run_dir: Path) -> Path:
    """An empty run dir (a left-over one would make run.py resume the last smoke's run)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    return summary, metrics


def judge_run(check: str, t0: float, rc: int, out: str, run_dir: Path, steps: int,
              need: str | None = None) -> Result:  # fmt: skip
    """PASS when the run exited 0, trained `steps` steps with finite losses (and logged `need`)."""
    if rc != 0:
        return summarise("FAIL", check, t0, f"rc={rc} {last_error(out)}")
    try:
        summary, metrics = read_run(run_dir)
    except (OSError, ValueError) as err:
        return summarise("FAIL", check, t0, f"no results in {run_dir}: {err}")
    losses = [r["train/loss"] for r in metrics if "train/loss" in r]
    done = int(summary.get("train/steps", summary.get("stage1/steps", len(losses))))
    if done < steps or not losses or not all(math.isfinite(x) for x in losses):
        return summarise("FAIL", check, t0, f"steps={done}/{steps} losses={losses}")
    if need and not any(need in r for r in metrics):
        return summarise("FAIL", check, t0, f"steps={done} but no {need} in metrics.jsonl")
    train_s = summary.get("perf/train_s")
    detail = f"steps={done} last_loss={losses[-1]:.4g} train_s={train_s and round(train_s, 1)}"
    return summarise("PASS", check, t0, f"{detail} run_dir={run_dir}")


def check_grpo_tiny(m: Machine, timeout: float, steps: int) -> Result:
    t0 = time.perf_counter()
    run_dir = fresh(m.out / "grpo_tiny")
    over = grpo_overrides(m, steps) + m.extra.get("grpo_tiny", [])
    note = ""
    if m.cuda and not policy_built():  # building it would eat the budget: the @test variant
        over, note = [*over, "budget.zoo=test"], " zoo=test (tiny-policy not built)"
    cmd = [m.python, "run.py", "experiment=grpo_tiny", *over, f"hydra.run.dir={run_dir}"]
    rc, out = run(cmd, timeout)
    res = judge_run("grpo_tiny", t0, rc, out, run_dir, steps)
    return Result(res.status, res.check, res.seconds, res.detail + note)


def policy_built() -> bool:
    from nudgekit.zoo.registry import is_built

    return is_built("tiny-policy")


def check_zero(m: Machine, stage: int, timeout: float, steps: int) -> Result:
    t0 = time.perf_counter()
    check = f"zero{stage}"
    run_dir = fresh(m.out / check)
    over = grpo_overrides(m, steps) + [f"trainer/deepspeed=zero{stage}", "debug=tiny"]
    over = list(dict.fromkeys(over)) + m.extra.get(check, [])
    cmd = [m.python, "-m", "torch.distributed.run", "--nproc_per_node=2", "run.py",
           "experiment=grpo_tiny", *over, f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {} if m.cuda else {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    rc, out = run(cmd, timeout, env)
    return judge_run(check, t0, rc, out, run_dir, steps)


def nurl_overrides(m: Machine, path: str, steps: int) -> list[str]:
    """nurl_qwen shaped down onto a local model dir and the tiny world (pure)."""
    device = ["model.device=cuda", "model.dtype=bfloat16"] if m.cuda else [
        "model.device=cpu", "model.dtype=float32"]  # fmt: skip
    return [
        "experiment=nurl_qwen",
        f"model.name_or_path={path}",
        *device,
        "engine=vllm",
        "trainer.rollout.max_model_len=null",  # nurl_qwen's 8192 is past a small model's limit
        "trainer.rollout.dtype=null",  # the model's dtype
        "logger=disabled",
        "data=tiny",
        "hints=oracle",
        "~train_data",
        "+train_data={_target_: nudgekit.zoo.tiny_problems, split: train, level: medium, n: 32,"
        " seed: 0}",
        f"budget.steps={steps}",
        "budget.samples=4",
        "budget.max_new_tokens=16",
        "budget.problems=8",
        "pipeline.prompts_per_step=4",
        "pipeline.update.micro_batch_size=4",
        "pipeline.update.mini_batches=1",
        "pipeline.validation.every=0",
        "pipeline.schedule.filter_n=4",
        "pipeline.checkpoint.every=0",
    ]


def check_nurl_vllm(m: Machine, timeout: float, steps: int) -> Result:
    t0 = time.perf_counter()
    path, _ = model_dir(m)
    run_dir = fresh(m.out / "nurl_vllm")
    over = nurl_overrides(m, path, steps) + m.extra.get("nurl_vllm", [])
    cmd = [m.python, "run.py", *over, f"hydra.run.dir={run_dir}"]
    rc, out = run(cmd, timeout, None if m.cuda else VLLM_CPU_ENV)
    return judge_run("nurl_vllm", t0, rc, out, run_dir, steps, need="perf/weight_sync_s")


# --- the parity worker (its own process) -----------------------------------------------------


def parity_worker(path: str, device: str, dtype: str = "float32") -> dict:
    """Greedy HFEngine vs VLLMEngine on `path` in `dtype`; returns the record."""
    import torch

    from nudgekit.engines import GenerationRequest, HFEngine, VLLMEngine
    from nudgekit.models import ModelSpec
    from nudgekit.zoo.prompts import render_chat
    from nudgekit.zoo.tasks import chains

    torch.backends.cuda.matmul.allow_tf32 = False
    hf = HFEngine(ModelSpec(path, dtype=dtype, device=device))
    vl = VLLMEngine(ModelSpec(path, dtype=dtype, device=device),
                    gpu_memory_utilization=0.3, enforce_eager=True)  # fmt: skip
    questions = [c.question for c in chains("test", 2)[:6]]
    if hf.tokenizer.chat_template:
        prompts = [render_chat(hf.tokenizer, q) for q in questions]
    else:
        prompts = [f"Question: {q}\nAnswer:" for q in questions]

    def reqs() -> list:
        return [GenerationRequest(p, max_new_tokens=24, temperature=0, logprobs=True)
                for p in prompts]  # fmt: skip

    equal, worst = True, 0.0
    for v, h in zip(vl.generate(reqs()), hf.generate(reqs())):
        (vs,), (hs,) = v.samples, h.samples
        n = next((i for i, (a, b) in enumerate(zip(vs.token_ids, hs.token_ids)) if a != b), None)
        equal = equal and n is None and len(vs.token_ids) == len(hs.token_ids)
        k = len(vs.token_ids) if n is None else n  # compare log-probs up to the first divergence
        for a, b in zip(vs.logprobs[:k], hs.logprobs[:k]):
            worst = max(worst, abs(float(a) - float(b)))
    vl.close()
    return {"prompts": len(prompts), "greedy_equal": equal, "max_logprob_diff": worst}


# --- main ------------------------------------------------------------------------------------


def detect(args: argparse.Namespace) -> Machine:
    import torch

    cuda = torch.cuda.is_available() and args.device != "cpu"
    extra: dict[str, list[str]] = {}
    for item in args.override:
        check, _, override = item.partition(":")
        extra.setdefault(check, []).append(override)
    return Machine(
        device="cuda" if cuda else "cpu",
        n_gpus=torch.cuda.device_count() if cuda else 0,
        has_vllm=importlib.util.find_spec("vllm") is not None,
        cpu_zero=args.cpu_zero,
        out=Path(args.out).resolve(),
        model_dir=args.model_dir,
        parity_dtype=args.parity_dtype,
        extra=extra,
    )


def run_checks(m: Machine, checks: list[str], budget_s: float, atol: float) -> list[Result]:
    """Run `checks` in order, printing each line as it lands."""
    start, results = time.perf_counter(), []
    steps = {"grpo_tiny": 5 if m.cuda else 2, "zero": 2, "nurl_vllm": 3 if m.cuda else 2}
    for check in checks:
        left = budget_s - (time.perf_counter() - start)
        reason = skip_reason(check, m)
        if reason:
            res = Result("SKIP", check, 0.0, reason)
        elif left < 10:
            res = Result("FAIL", check, 0.0, f"no time left in --budget-s {budget_s:g}")
        else:
            timeout = min(TIMEOUTS[check], left)
            if check == "engine_parity":
                res = check_engine_parity(m, timeout, atol)
            elif check == "grpo_tiny":
                res = check_grpo_tiny(m, timeout, steps["grpo_tiny"])
            elif check in ("zero2", "zero3"):
                res = check_zero(m, int(check[-1]), timeout, steps["zero"])
            else:
                res = check_nurl_vllm(m, timeout, steps["nurl_vllm"])
        print(res.line(), flush=True)
        results.append(res)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    p.add_argument("--budget-s", type=float, default=480.0, help="all checks together")
    p.add_argument("--out", default=str(ROOT / "outputs" / "gpu_smoke"))
    p.add_argument("--model-dir", default=None, help="local HF dir for the vLLM checks")
    p.add_argument("--parity-atol", type=float, default=1e-3)
    p.add_argument("--parity-dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--cpu-zero", action="store_true", help="run zero2/zero3 on CPU (gloo)")
    p.add_argument("--override", action="append", default=[], metavar="CHECK:KEY=VALUE",
                   help="an extra run.py override for one check")  # fmt: skip
    p.add_argument("--worker", choices=["parity"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "parity":
        print(json.dumps(parity_worker(args.model_dir, args.device, args.parity_dtype)))
        return 0
    m = detect(args)
    m.out.mkdir(parents=True, exist_ok=True)
    print(f"# gpu smoke: device={m.device} gpus={m.n_gpus} vllm={m.has_vllm} out={m.out}")
    results = run_checks(m, args.only, args.budget_s, args.parity_atol)
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
