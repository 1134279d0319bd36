"""Nudging as an OpenAI-compatible service (`python run.py experiment=nudging_serve`).

The server binds 127.0.0.1 (unless told otherwise) and answers:

- `POST /v1/completions`: `prompt` is a question (a string) or a list of questions; each is
  rendered for both models by the configured prompt builders (the base model's plain prompt,
  the nudging model's chat template), exactly as `NudgingPipeline` and the nudged eval render a
  problem's question, and decoded by the configured nudging decoder.
- `POST /v1/chat/completions`: `messages` is one user message, whose content is the question
  (rendered the same way); the answer is an assistant message.
- `GET /health` (`{"status", "model"}`), `GET /v1/models`, `GET /progress` (requests served,
  errors, queued, in flight, decode calls, tokens, uptime, latency p50/p99).

Generation fields: `max_tokens` (`max_completion_tokens` in chat) is the nudging budget in base
tokens, as `max_new_tokens` everywhere in nudgekit and `max_tokens` in the paper's code: rounds
stop once the output reaches it, so the last chunk may run past it by less than one chunk;
`temperature` (0: greedy; > 0 samples both models, `top_p` and `seed` apply); `n`; `stop`
(applied server-side: the text is cut before the first stop string, finish reason "stop").
Answers are OpenAI-shaped (`id`, `object`, `created`, `model`, `choices`, `usage`) and each
choice has a `nudging` field: spans `[start, end, "nudge"|"base"]`, the nudged span texts,
tokens per model and the nudged-token share.

Departures: no streaming, no log-probs (`logprobs` is answered with null), no `echo`; token-id
prompts and multi-turn chats are refused. Concurrent requests are decoded together (a scheduler
thread batches them into the decoder; greedy outputs are batch-invariant).
"""

from nudgekit.serve.pipeline import ServePipeline
from nudgekit.serve.protocol import ApiError, Limits

__all__ = ["ApiError", "Limits", "ServePipeline"]
