"""`OpenAIEngine` against a real HTTP server on 127.0.0.1 that answers from the `hf` engine."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from nudgekit.engines import GenerationRequest, HFEngine, OpenAIEngine
from nudgekit.errors import NudgekitError
from nudgekit.models import load_model, load_tokenizer


def _choice(index: int, sample, req: GenerationRequest) -> dict:
    """One completion choice in vLLM's format (`return_tokens_as_token_ids`, `stop_reason`)."""
    stop_reason = next((s for s in req.stop if sample.finish_reason == "stop"), None)
    choice = {
        "index": index,
        "text": sample.text,
        "finish_reason": "length" if sample.finish_reason == "length" else "stop",
        "stop_reason": stop_reason,
    }
    if sample.logprobs is not None:
        choice["logprobs"] = {
            "tokens": [f"token_id:{t}" for t in sample.token_ids],
            "token_logprobs": sample.logprobs,
            "top_logprobs": [
                {f"token_id:{t}": lp, f"token_id:{tt}": tlp}
                for t, lp, tt, tlp in zip(
                    sample.token_ids, sample.logprobs, sample.top_token_ids, sample.top_logprobs
                )
            ],
        }
    return choice


def _serve(engine: HFEngine):
    lock = threading.Lock()
    seen_auth: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_POST(self):  # noqa: N802 (http.server naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen_auth.append(self.headers.get("Authorization"))
            if self.path != "/v1/completions" or body.get("model") != "tiny":
                return self._send(
                    400, {"error": {"message": f"unknown model {body.get('model')!r}"}}
                )
            req = GenerationRequest(
                prompt=body["prompt"],
                n=body["n"],
                max_new_tokens=body["max_tokens"],
                temperature=body["temperature"],
                top_p=body["top_p"],
                stop=body.get("stop", []),
                seed=body.get("seed"),
                logprobs=body.get("logprobs") is not None,
                top_logprobs=body.get("logprobs") is not None,
            )
            with lock:
                (res,) = engine.generate([req])
            self._send(200, {"choices": [_choice(i, s, req) for i, s in enumerate(res.samples)]})

        def _send(self, status: int, payload: dict):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen_auth


@pytest.fixture(scope="module")
def hf(tiny_qwen_dir) -> HFEngine:
    return HFEngine(load_model(tiny_qwen_dir), load_tokenizer(tiny_qwen_dir))


@pytest.fixture(scope="module")
def server(hf):
    srv, seen_auth = _serve(hf)
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen_auth
    srv.shutdown()


def test_matches_the_hf_engine(hf, server):
    url, _ = server
    prompt_ids = hf.tokenizer("The answer is", add_special_tokens=False).input_ids
    reqs = [
        GenerationRequest(
            "Hello world!", n=3, max_new_tokens=8, seed=1, logprobs=True, top_logprobs=True
        ),
        GenerationRequest(
            prompt_ids, n=2, max_new_tokens=12, seed=2, temperature=0.0, logprobs=True
        ),
        GenerationRequest("Question:", n=4, max_new_tokens=16, seed=3, stop=["e", "a"]),
    ]
    direct = hf.generate(reqs)
    remote = OpenAIEngine(url + "/v1", "tiny", tokenizer=hf.tokenizer).generate(reqs)
    assert remote[1].prompt_ids == prompt_ids
    assert remote[0].prompt_ids == direct[0].prompt_ids  # text prompt: ids from the tokenizer
    for d, r in zip(direct, remote):
        for ds, rs in zip(d.samples, r.samples, strict=True):
            assert (rs.token_ids, rs.text, rs.finish_reason) == (
                ds.token_ids,
                ds.text,
                ds.finish_reason,
            )
            assert rs.top_token_ids == ds.top_token_ids
            if ds.logprobs is not None:  # the server batches differently: equal up to rounding
                assert torch.allclose(
                    torch.tensor(rs.logprobs), torch.tensor(ds.logprobs), atol=1e-5
                )
            else:
                assert rs.logprobs is None
    assert any(s.finish_reason == "stop" for s in remote[2].samples)
    assert remote[0].samples[0].logprobs and remote[0].samples[0].top_logprobs
    assert torch.allclose(
        torch.tensor(remote[0].samples[0].top_logprobs),
        torch.tensor(direct[0].samples[0].top_logprobs),
        atol=1e-5,
    )


def test_api_key_comes_from_env(server, monkeypatch):
    url, seen_auth = server
    monkeypatch.setenv("NUDGEKIT_TEST_KEY", "sk-test")
    OpenAIEngine(url, "tiny", api_key_env="NUDGEKIT_TEST_KEY").generate(
        [GenerationRequest("Hi", max_new_tokens=2, seed=0)]
    )
    assert seen_auth[-1] == "Bearer sk-test"
    monkeypatch.delenv("NUDGEKIT_TEST_KEY")
    OpenAIEngine(url, "tiny", api_key_env="NUDGEKIT_TEST_KEY").generate(
        [GenerationRequest("Hi", max_new_tokens=2, seed=0)]
    )
    assert seen_auth[-1] is None


def test_http_error_is_one_line(server):
    url, _ = server
    with pytest.raises(NudgekitError, match="HTTP 400: unknown model 'nope'") as err:
        OpenAIEngine(url, "nope").generate([GenerationRequest("Hi", max_new_tokens=2)])
    assert "\n" not in str(err.value)


def test_unreachable_server_fails_fast():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(NudgekitError, match="unreachable"):
        OpenAIEngine(f"http://127.0.0.1:{port}", "tiny", max_retries=0, timeout_s=2).generate(
            [GenerationRequest("Hi")]
        )
    assert time.monotonic() - start < 5


def test_payload_shape():
    eng = OpenAIEngine("http://127.0.0.1:1/v1/", "m", vllm_extensions=False)
    assert eng.url == "http://127.0.0.1:1/v1/completions"
    body = eng.payload(GenerationRequest([1, 2], n=2, max_new_tokens=5, stop=["\n"], seed=3))
    assert body == {
        "model": "m",
        "prompt": [1, 2],
        "n": 2,
        "max_tokens": 5,
        "temperature": 1.0,
        "top_p": 1.0,
        "stop": ["\n"],
        "seed": 3,
        "logprobs": 1,
    }
