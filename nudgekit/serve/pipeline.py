"""`ServePipeline`: load a nudging pair and serve it over HTTP until told to stop.

`python run.py experiment=nudging_serve` runs it inside the run dir (whose lock the CLI holds):
it loads both models, starts the scheduler thread and the server on `host:port` (127.0.0.1 by
default; port 0 picks a free one), writes `<run_dir>/server.json` (url, host, port, pid, model)
once it accepts requests, and serves until SIGINT/SIGTERM, `max_requests` answered generation
requests, or `max_seconds`. It then stops accepting, answers what is in flight, closes the
socket, writes `<run_dir>/serve.json` (the progress document at shutdown) and logs the served
counts and latencies to the tracker under `serve/`; the run exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nudgekit.errors import NudgekitError
from nudgekit.models.loading import check_device, resolve_model_path
from nudgekit.serve.http import NudgingHTTPServer
from nudgekit.serve.protocol import Limits, is_number
from nudgekit.serve.scheduler import Scheduler
from nudgekit.serve.service import Service
from nudgekit.tracking.files import write_atomic

log = logging.getLogger(__name__)


class ServePipeline:
    """Serve nudging as an OpenAI-compatible endpoint (see `nudgekit.serve`).

    Args:
        base: `ModelSpec` of the large base model.
        nudging: `ModelSpec` of the small aligned (nudging) model.
        base_prompt: renders a question for the base model.
        nudging_prompt: renders a question for the nudging model.
        decoder: a partial decoder class, called with `base`, `nudging` (engines),
            `max_new_tokens`, `seed`, `base_temperature`, `nudging_temperature` and `top_p`.
        model_name: the name clients must send as `model`.
        host: the address to bind (127.0.0.1 unless told otherwise).
        port: the port (0: any free one; the chosen one is in `server.json`).
        limits: request limits (`nudgekit.serve.Limits`).
        batch_size: most questions taken by a decode call at its start (and per call, in waves).
        batch_wait_ms: a batch waits for company until no request arrived for this long
            (at most 10 times as long in all).
        max_requests: stop after this many answered generation requests (None: never).
        max_seconds: stop after this long (None: never).
        engine_batch_size: rows per forward of the models' engines.
        continuous: greedy questions queued while a call runs join it (needs a decoder with
            `stream`, the cached one); False: every call decodes the questions it took at its
            start, in waves (see `nudgekit.serve.scheduler`).
    """

    def __init__(
        self,
        base: Any,
        nudging: Any,
        base_prompt: Callable[[str], str],
        nudging_prompt: Callable[[str], str],
        decoder: Callable[..., Any],
        model_name: str = "nudgekit-nudging",
        host: str = "127.0.0.1",
        port: int = 8000,
        limits: Limits | None = None,
        batch_size: int = 64,
        batch_wait_ms: float = 20.0,
        max_requests: int | None = None,
        max_seconds: float | None = None,
        engine_batch_size: int = 16,
        continuous: bool = True,
    ) -> None:
        if not 0 <= port <= 65535:
            raise NudgekitError(f"serve: port={port} must lie in 0..65535")
        if batch_size < 1 or batch_wait_ms < 0:
            raise NudgekitError("serve: batch_size must be >= 1 and batch_wait_ms >= 0")
        if max_requests is not None and max_requests < 1:
            raise NudgekitError(f"serve: max_requests={max_requests} must be >= 1 (or null)")
        self.specs = {"base": base, "nudging": nudging}
        self.base_prompt, self.nudging_prompt, self.decoder = base_prompt, nudging_prompt, decoder
        self.model_name, self.host, self.port = model_name, host, port
        self.limits = limits or Limits()
        self.batch_size, self.wait_s = batch_size, batch_wait_ms / 1000.0
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.engine_batch_size, self.continuous = engine_batch_size, continuous
        self.stop = threading.Event()
        self.url: str | None = None  # set once serving
        self.ready = threading.Event()
        for spec in self.specs.values():
            check_device(spec.device)
            resolve_model_path(spec.name_or_path, getattr(spec, "revision", None))

    def run(self, tracker: Any = None, run_dir: Path | str | None = None) -> dict[str, float]:
        engines = {k: self._engine(s) for k, s in self.specs.items()}
        scheduler = Scheduler(
            self._decode_fn(engines), self.batch_size, self.wait_s, self.limits.max_queued,
            stream=self._stream_fn(engines),
        )  # fmt: skip
        service = Service(
            self.model_name,
            self.limits,
            self.base_prompt,
            self.nudging_prompt,
            self.specs["base"].load_tokenizer(),
            self.specs["nudging"].load_tokenizer(),
            scheduler,
            self.max_requests,
            on_stop=self.stop.set,
        )
        try:
            httpd = NudgingHTTPServer((self.host, self.port), service)
        except OSError as exc:
            raise NudgekitError(f"serve: cannot listen on {self.host}:{self.port}: {exc}") from None
        scheduler.start()
        progress = self._serve(httpd, service, scheduler, run_dir)
        metrics = {f"serve/{k}": float(v) for k, v in progress.items() if is_number(v)}
        if tracker is not None:
            tracker.log(metrics)
        return metrics

    def _serve(self, httpd, service: Service, scheduler: Scheduler, run_dir) -> dict[str, Any]:
        host, port = httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        thread = threading.Thread(target=httpd.serve_forever, name="nudging-http", daemon=True)
        restore = self._on_signals()
        try:
            thread.start()
            if run_dir is not None:
                info = {"url": self.url, "host": host, "port": port, "pid": os.getpid(),
                        "model": self.model_name}  # fmt: skip
                _write_json(Path(run_dir) / "server.json", info)
            log.info("serve: %s on %s/v1 (POST completions, chat/completions)",
                     self.model_name, self.url)  # fmt: skip
            self.ready.set()
            self.stop.wait(self.max_seconds)
        finally:
            service.draining = True
            httpd.shutdown()  # no new connections; the handler threads run on
            httpd.server_close()  # closes the socket, joins the handler threads
            scheduler.close()
            restore()
            thread.join()
        progress = service.progress()
        if run_dir is not None:
            _write_json(Path(run_dir) / "serve.json", progress)
        log.info(
            "serve: stopped after %d requests (%d errors), p50 %s s, p99 %s s",
            progress["requests"], progress["errors"],
            progress["latency_p50_s"], progress["latency_p99_s"],
        )  # fmt: skip
        return progress

    def _on_signals(self) -> Callable[[], None]:
        """SIGINT/SIGTERM stop the server (only the main thread can install handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, lambda *_: self.stop.set())

        def restore() -> None:
            for s, handler in old.items():
                signal.signal(s, handler)

        return restore

    def _engine(self, spec: Any) -> Any:
        from nudgekit.engines.hf import HFEngine

        return HFEngine(
            spec.load_model(), spec.load_tokenizer(), max_batch_size=self.engine_batch_size
        )

    def _decode_fn(self, engines: dict[str, Any]) -> Callable[..., list[Any]]:
        def decode(base_prompts, nudging_prompts, max_tokens, temperature, top_p, seed):
            decoder = self.decoder(
                base=engines["base"], nudging=engines["nudging"], max_new_tokens=max_tokens,
                seed=seed, base_temperature=temperature, nudging_temperature=temperature,
                top_p=top_p,
            )  # fmt: skip
            return decoder.decode(base_prompts, nudging_prompts)

        return decode

    def _stream_fn(self, engines: dict[str, Any]) -> Callable[..., None] | None:
        """Continuous greedy decoding, when the decoder can (`stream`: the cached decoder)."""
        if not self.continuous or not hasattr(
            getattr(self.decoder, "func", self.decoder), "stream"
        ):
            return None

        def stream(take, done, max_tokens):
            decoder = self.decoder(
                base=engines["base"], nudging=engines["nudging"], max_new_tokens=max_tokens,
                seed=0, base_temperature=0.0, nudging_temperature=0.0,
            )  # fmt: skip
            decoder.stream(take, done)

        return stream


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(doc, indent=2) + "\n")
