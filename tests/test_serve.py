"""The nudging server on 127.0.0.1 with the tiny test pair: OpenAI shapes, answers equal to the
in-process decoder's, stop / max_tokens / n / sampling, usage, one-line 4xx errors, progress,
nudgekit's own `OpenAIEngine` as a client, a small load test, and clean shutdowns (in-process
after `max_requests`, and `run.py` under SIGTERM)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.nudging import engine, model_dirs

from nudgekit.engines import GenerationRequest, OpenAIEngine
from nudgekit.engines.tokens import prompt_ids
from nudgekit.models import ChatPrompt, ModelSpec
from nudgekit.nudging import CachedNudgingDecoder
from nudgekit.nudging.text import encode
from nudgekit.serve import Limits, ServePipeline
from nudgekit.serve.loadtest import get_json, post_json, run_load
from nudgekit.zoo import tiny_problems

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-nudging"
pytestmark = pytest.mark.usefixtures("one_thread")
DECODER = functools.partial(CachedNudgingDecoder, gamma=0.3, chunk_tokens=8, batch_size=16)
LIMITS = Limits(
    max_prompt_chars=400, max_prompt_tokens=200, max_tokens=64, max_n=4, max_body_bytes=20_000
)
QUESTIONS = list(dict.fromkeys(p.question for p in tiny_problems("test", n=60, seed=3)))[:48]


class Served:
    """A `ServePipeline` running in a thread, plus an in-process reference decoder."""

    def __init__(self, dirs: dict[str, Path], run_dir: Path, limits=None, **kwargs) -> None:
        base, small = ModelSpec(str(dirs["base"])), ModelSpec(str(dirs["small"]))
        self.base_prompt = ChatPrompt(base, "tiny", chat=False)
        self.nudging_prompt = ChatPrompt(small, "tiny", chat=True)
        self.pipe = ServePipeline(
            base, small, self.base_prompt, self.nudging_prompt, DECODER, model_name=MODEL,
            port=0, limits=limits or LIMITS,
            batch_wait_ms=20, **kwargs,
        )  # fmt: skip
        self.metrics: dict = {}
        self.thread = threading.Thread(
            target=lambda: self.metrics.update(self.pipe.run(run_dir=run_dir)), daemon=True
        )
        self.thread.start()
        assert self.pipe.ready.wait(60), "the server did not start"
        self.url = self.pipe.url
        self.engines = {"base": engine(dirs["base"]), "nudging": engine(dirs["small"])}

    def reference(self, questions, max_tokens=24, **kw):
        """The in-process decoder's outputs for `questions` (one decode call)."""
        dec = DECODER(
            self.engines["base"], self.engines["nudging"], max_new_tokens=max_tokens, **kw
        )
        return dec.decode(
            [self.base_prompt(q) for q in questions], [self.nudging_prompt(q) for q in questions]
        )

    def stop(self) -> None:
        self.pipe.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Served(model_dirs(tmp_path_factory), tmp_path_factory.mktemp("serve"))
    yield server
    server.stop()


def complete(served, **body):
    return post_json(served.url, "/v1/completions", {"model": MODEL, **body})


def test_completions_equal_the_in_process_decoder(served):
    qs = QUESTIONS[:3]
    status, ans = complete(served, prompt=qs, max_tokens=24)
    assert status == 200, ans
    assert ans["object"] == "text_completion" and ans["model"] == MODEL and ans["id"]
    ref = served.reference(qs)
    assert [c["text"] for c in ans["choices"]] == [o.text for o in ref]
    assert [c["index"] for c in ans["choices"]] == [0, 1, 2]
    tok = served.engines["base"].tokenizer
    usage = ans["usage"]
    assert usage["prompt_tokens"] == sum(len(prompt_ids(tok, served.base_prompt(q))) for q in qs)
    assert usage["completion_tokens"] == sum(len(encode(tok, o.text)) for o in ref)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    for c, o in zip(ans["choices"], ref):
        nud = c["nudging"]
        assert nud["spans"] == [[s.start, s.end, s.source] for s in o.spans]
        assert "".join(c["text"][a:b] for a, b, _ in nud["spans"]) == c["text"]
        assert (nud["nudge_tokens"], nud["base_tokens"]) == (o.nudge_tokens, o.base_tokens)
        assert c["finish_reason"] == ("length" if o.stop_reason in ("length", "rounds") else "stop")
    assert any(c["nudging"]["nudge_tokens"] and c["nudging"]["base_tokens"] for c in ans["choices"])


def test_chat_completions_and_openai_engine_client(served):
    q = QUESTIONS[3]
    (ref,) = served.reference([q])
    status, ans = post_json(
        served.url, "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": q}], "max_tokens": 24},
    )  # fmt: skip
    assert status == 200, ans
    assert ans["object"] == "chat.completion"
    assert ans["choices"][0]["message"] == {"role": "assistant", "content": ref.text}
    client = OpenAIEngine(served.url, MODEL, vllm_extensions=False, timeout_s=30)
    (result,) = client.generate([GenerationRequest(prompt=q, max_new_tokens=24, temperature=0)])
    assert result.samples[0].text == ref.text


def test_greedy_is_batch_invariant(served):
    """A question's greedy answer is the same alone, in a batch, and among concurrent requests."""
    qs = QUESTIONS[4:12]
    alone = [served.reference([q])[0].text for q in qs[:3]]
    batched = [o.text for o in served.reference(qs)]
    assert batched[:3] == alone
    got = {}
    threads = [
        threading.Thread(target=lambda q=q: got.__setitem__(q, complete(served, prompt=q, max_tokens=24)))
        for q in qs
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[q][1]["choices"][0]["text"] for q in qs] == batched


def test_stop_max_tokens_n_and_sampling(served):
    q = QUESTIONS[12]
    (full,) = served.reference([q], max_tokens=40)
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    status, ans = complete(served, prompt=q, max_tokens=40, stop=[stop, "never-there"], n=3)
    assert status == 200, ans
    texts = [c["text"] for c in ans["choices"]]
    assert texts == [full.text[: full.text.find(stop)]] * 3
    assert {c["finish_reason"] for c in ans["choices"]} == {"stop"}
    assert [c["index"] for c in ans["choices"]] == [0, 1, 2]
    spans = ans["choices"][0]["nudging"]["spans"]
    assert spans and spans[-1][1] == len(texts[0])
    (short,) = served.reference([q], max_tokens=4)
    status, ans = complete(served, prompt=q, max_tokens=4)
    assert ans["choices"][0]["text"] == short.text and short.text != full.text
    assert ans["choices"][0]["finish_reason"] == "length"
    sampled = dict(prompt=q, max_tokens=24, temperature=1.0, n=2, seed=7)
    first, again = complete(served, **sampled)[1], complete(served, **sampled)[1]
    ref = served.reference([q, q], seed=7, base_temperature=1.0, nudging_temperature=1.0)
    assert [c["text"] for c in first["choices"]] == [o.text for o in ref]
    assert first["choices"] == again["choices"]


BAD = [  # (path, body, status, param, words in the message)
    ("/v1/completions", b'{"model": "tiny-nudging", "prompt": ', 400, None, "not valid JSON"),
    ("/v1/completions", {"model": "gpt-4", "prompt": "q"}, 404, "model", "does not exist"),
    ("/v1/completions", {"prompt": "q", "max_tokens": 0}, 400, "max_tokens", "1..64"),
    ("/v1/completions", {"prompt": "q", "max_tokens": 10**6}, 400, "max_tokens", "out of range"),
    ("/v1/completions", {"prompt": "q" * 401}, 400, "prompt", "at most 400"),
    ("/v1/completions", {"prompt": "1 " * 199}, 400, "prompt", "tokens once rendered"),
    ("/v1/completions", {"prompt": "q", "n": 9}, 400, "n", "out of range"),
    ("/v1/completions", {"prompt": "q", "temperature": "hot"}, 400, "temperature", "a number"),
    ("/v1/completions", {"prompt": "q", "max_tokens": 2.5}, 400, "max_tokens", "an integer"),
    ("/v1/completions", {"prompt": [1, 2, 3]}, 400, "prompt", "token-id"),
    ("/v1/completions", {"prompt": "q", "stream": True}, 400, "stream", "not supported"),
    ("/v1/completions", {"prompt": "q", "stop": 5}, 400, "stop", "list of strings"),
    ("/v1/completions", ["q"], 400, None, "JSON object"),
    ("/v1/completions", {"prompt": "q" * 30_000}, 413, None, "at most 20000"),
    ("/v1/chat/completions", {"messages": "hi"}, 400, "messages", "non-empty list"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]},
        400,
        "messages",
        "exactly one user message",
    ),  # fmt: skip
    ("/v1/nope", {}, 404, None, "no route"),
]


@pytest.mark.parametrize("path, body, status, param, words", BAD)
def test_bad_requests_are_one_line_errors(served, path, body, status, param, words):
    got, ans = post_json(served.url, path, body)
    assert got == status, ans
    err = ans["error"]
    assert words in err["message"] and "\n" not in err["message"], err
    assert err["param"] == param and err["type"]


def test_health_models_progress(served):
    assert get_json(served.url, "/health") == (200, {"status": "ok", "model": MODEL})
    status, models = get_json(served.url, "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == [MODEL]
    complete(served, prompt=QUESTIONS[0], max_tokens=8)
    status, prog = get_json(served.url, "/progress")
    assert status == 200 and prog["ok"] >= 1 and prog["queued"] == 0 and prog["in_flight"] == 0
    assert prog["completion_tokens"] > 0 and prog["latency_p50_s"] > 0 and prog["uptime_s"] > 0


def test_small_load(served):
    """8 clients, 40 requests over 40 distinct questions: no errors, every answer its own."""
    qs = QUESTIONS[8:48]
    expected = {q: o.text for q, o in zip(qs, served.reference(qs))}
    report = run_load(served.url, MODEL, qs, expected, clients=8, requests=40, max_tokens=24)
    assert report["ok"] == 40 and report["first_problem"] is None, report
    assert report["latency_p99_s"] >= report["latency_p50_s"] > 0


def test_stops_after_max_requests(tmp_path_factory, tmp_path):
    server = Served(model_dirs(tmp_path_factory), tmp_path, max_requests=2)
    for q in QUESTIONS[:2]:
        assert complete(server, prompt=q, max_tokens=8)[0] == 200
    server.thread.join(30)
    assert not server.thread.is_alive()
    assert server.metrics["serve/requests"] == 2 and server.metrics["serve/errors"] == 0
    assert json.loads((tmp_path / "serve.json").read_text())["ok"] == 2
    with pytest.raises(OSError):
        complete(server, prompt="q", max_tokens=8)


def test_run_py_serves_and_exits_0_on_sigterm(tmp_path_factory, tmp_path):
    dirs = model_dirs(tmp_path_factory)
    cmd = [sys.executable, "run.py", "experiment=nudging_serve", "logger=disabled",
           f"model.name_or_path={dirs['base']}", f"pipeline.nudging.name_or_path={dirs['small']}",
           "pipeline.port=0", f"hydra.run.dir={tmp_path}"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = tmp_path.parent / f"{tmp_path.name}.stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "server.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        info = json.loads((tmp_path / "server.json").read_text())
        assert info["host"] == "127.0.0.1" and info["pid"] == proc.pid
        status, ans = post_json(info["url"], "/v1/completions",
                                {"model": "nudgekit-nudging", "prompt": QUESTIONS[0], "max_tokens": 8})  # fmt: skip
        assert status == 200, ans
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads((tmp_path / "serve.json").read_text())["ok"] == 1
