"""Load test of the nudging server on loopback: many concurrent clients, every answer checked.

Starts `python run.py experiment=nudging_serve pipeline.port=0 <overrides>` in its own process,
decodes the same questions in-process with the same config (prompt builders, decoder, models)
for the expected answers, then sends `--requests` greedy completions from `--clients` threads,
request `i` asking distinct question `i` of the tiny world's test split. Reports errors,
mismatches (a lost, swapped or mixed-up answer shows as a wrong text), latency p50/p99 and
throughput, next to the server's own /progress, stops the server with SIGTERM (it must exit 0)
and writes `experiments/bench/results/serve_load.json`:

    python experiments/bench/serve_load.py                              # 32 clients, 500 requests
    python experiments/bench/serve_load.py --clients 8 --requests 40 --max-tokens 24
    python experiments/bench/serve_load.py -- decoder.batch_size=128   # overrides for both sides
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

import nudgekit.config  # noqa: E402,F401  (resolvers)
from nudgekit.engines.hf import HFEngine  # noqa: E402
from nudgekit.serve.loadtest import get_json, run_load  # noqa: E402
from nudgekit.zoo import tiny_problems  # noqa: E402


def expected_answers(
    overrides: list[str], questions: list[str], max_tokens: int
) -> tuple[dict, str]:
    """The in-process nudged answers, from the server's own config."""
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=["experiment=nudging_serve", *overrides])
    pipe = instantiate(cfg.pipeline)
    base, nudging = (HFEngine(s.load_model(), s.load_tokenizer()) for s in pipe.specs.values())
    decoder = pipe.decoder(base=base, nudging=nudging, max_new_tokens=max_tokens, seed=0)
    start = time.perf_counter()
    outs = decoder.decode(
        [pipe.base_prompt(q) for q in questions], [pipe.nudging_prompt(q) for q in questions]
    )
    print(f"in-process: {len(questions)} answers in {time.perf_counter() - start:.1f}s")
    return {q: o.text for q, o in zip(questions, outs)}, cfg.pipeline.model_name


def start_server(overrides: list[str], run_dir: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "run.py", "experiment=nudging_serve", "pipeline.port=0",
           "logger=disabled", f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip
    log = open(run_dir.parent / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
    deadline = time.monotonic() + 600
    while not (run_dir / "server.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start; see {log.name}")
        time.sleep(0.2)
    return proc, json.loads((run_dir / "server.json").read_text())["url"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--out", default=str(ROOT / "experiments/bench/results/serve_load.json"))
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the server and reference")
    args = ap.parse_args()
    questions = list(dict.fromkeys(p.question for p in tiny_problems("test")))
    if args.requests > len(questions):
        raise SystemExit(f"--requests must be <= {len(questions)} (distinct questions)")
    questions = questions[: args.requests]
    expected, model = expected_answers(args.overrides, questions, args.max_tokens)
    run_dir = Path(tempfile.mkdtemp(prefix="serve_load_")) / "run"
    run_dir.mkdir()
    proc, url = start_server(args.overrides, run_dir)
    try:
        report = run_load(url, model, questions, expected, args.clients, args.requests,
                          args.max_tokens)  # fmt: skip
        report["server_progress"] = get_json(url, "/progress")[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        report_rc = proc.wait(120)
    report.update(exit_code=report_rc, max_tokens=args.max_tokens, overrides=args.overrides,
                  machine=f"{platform.machine()}, {os.cpu_count()} CPUs")  # fmt: skip
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    bad = report["errors"] + report["mismatches"] + (report["ok"] != args.requests) + report_rc
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
