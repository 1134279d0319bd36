"""Test helpers, in one place: config composition (`config`), the nudging test models
(`nudging`), an OpenAI-compatible test server (`openai_server`) and the GRPO trainer builders,
rewards and worker scripts (`rl`).

Tests import them as `helpers.<module>` (pytest puts `tests/` on `sys.path`); scripts launched
by path put the repository root on `sys.path` and import `tests.helpers.<module>`.
"""
