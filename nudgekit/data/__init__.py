"""Data: `Problem` records, loaders over `datasets`, the benchmark registry and prompt templates.

- `load_problems(source, ...)`: a local json/jsonl/parquet file or folder, or a hub dataset id.
- `load_benchmark(name, path=None, limit=None)`: gsm8k, math500, svamp, multiarith, aime24, amc23
  (and whatever `register_benchmark` / `register_benchmark_loader` add).
- `PromptTemplate` / `TEMPLATES` / `get_template`: problem (+ hint) -> chat messages or plain text.

Bad rows raise `NudgekitError` with one line naming file, row (counted from 1) and field.
"""

from nudgekit.data.benchmarks import (
    BENCHMARKS,
    Benchmark,
    default_data_dir,
    load_benchmark,
    register_benchmark,
    register_benchmark_loader,
)
from nudgekit.data.loaders import load_problems
from nudgekit.data.problem import Problem
from nudgekit.data.prompts import TEMPLATES, PromptTemplate, get_template
from nudgekit.data.rows import content_id, format_number

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "Problem",
    "PromptTemplate",
    "TEMPLATES",
    "content_id",
    "default_data_dir",
    "format_number",
    "get_template",
    "load_benchmark",
    "load_problems",
    "register_benchmark",
    "register_benchmark_loader",
]
