"""Run-dir outputs of a nudging run: the attribution HTML page and the results table.

The page lists every item with its question, its collaborative answer (spans written by the
nudging model highlighted, hover shows which model and how many characters), its correctness,
and the baselines' answers; a header summarises the run's metrics. It is self-contained (inline
CSS, no scripts) so it opens from the run dir in any browser.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from nudgekit.nudging.attribution import NUDGE

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; color: #222; }
table.metrics { border-collapse: collapse; margin-bottom: 1.5em; }
table.metrics td { border: 1px solid #ccc; padding: 2px 8px; font-family: monospace; }
.item { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; margin: 0.8em 0; }
.item h3 { margin: 0 0 0.3em 0; font-size: 0.95em; }
pre { white-space: pre-wrap; margin: 0.3em 0; font-size: 0.95em; }
.nudge { background: #ffd54f; border-bottom: 2px solid #e65100; }
.base { background: transparent; }
.ok { color: #1b5e20; font-weight: bold; }
.bad { color: #b71c1c; font-weight: bold; }
.legend span { padding: 1px 6px; margin-right: 1em; }
.baseline { color: #555; font-size: 0.9em; }
"""


def highlight(text: str, spans: Sequence[Sequence]) -> str:
    """`text` as HTML with each span wrapped in `<span class="nudge|base">`."""
    out, at = [], 0
    for start, end, source in spans:
        if start > at:
            out.append(html.escape(text[at:start]))
        title = f"{'nudging' if source == NUDGE else 'base'} model, {end - start} chars"
        cls = "nudge" if source == NUDGE else "base"
        out.append(f'<span class="{cls}" title="{title}">{html.escape(text[start:end])}</span>')
        at = end
    out.append(html.escape(text[at:]))
    return "".join(out)


def _mark(correct: float | None) -> str:
    if correct is None:
        return ""
    return '<span class="ok">correct</span>' if correct >= 1.0 else '<span class="bad">wrong</span>'


def html_page(records: Sequence[Mapping], metrics: Mapping[str, float], title: str) -> str:
    """The attribution page for `records` (as written to nudging.jsonl)."""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in sorted(metrics.items())
    )
    items = []
    for r in records:
        baselines = "".join(
            f'<div class="baseline"><b>{html.escape(name)}</b> {_mark(b.get("correct"))}'
            f"<pre>{html.escape(b['output'])}</pre></div>"
            for name, b in r.get("baselines", {}).items()
        )
        items.append(
            f'<div class="item"><h3>{html.escape(str(r["id"]))} {_mark(r.get("correct"))} '
            f"(answer {html.escape(str(r.get('answer', '')))}; nudging tokens "
            f"{r['nudge_tokens']}, base tokens {r['base_tokens']}; {r.get('rounds', '?')} "
            f"rounds, stop: {html.escape(str(r.get('stop_reason', '?')))})</h3>"
            f"<div><b>question</b><pre>{html.escape(r['question'])}</pre></div>"
            f"<div><b>nudging</b><pre>{highlight(r['output'], r['spans'])}</pre></div>"
            f"{baselines}</div>"
        )
    legend = (
        '<p class="legend"><span class="nudge">written by the nudging model</span>'
        "<span>written by the base model</span></p>"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{legend}"
        f"<table class='metrics'>{rows}</table>{''.join(items)}</body></html>"
    )


def write_page(path: Path, records: Sequence[Mapping], metrics: Mapping[str, float], title: str):
    path.write_text(html_page(records, metrics, title), encoding="utf-8")
    return path
