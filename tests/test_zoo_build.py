"""The reduced (`@test`) zoo: build, cache, determinism, and the tiny-world check pipeline."""

from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nudgekit.errors import NudgekitError
from nudgekit.eval.zoo_check import TinyWorldCheck
from nudgekit.zoo import NAMES, ZooBuild, build_all, config_hash, read_meta, resolve
from nudgekit.zoo.build import build_into
from nudgekit.zoo.registry import model_dir, spec_of
from nudgekit.zoo.train import weight_hash


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Every `@test` model built once into a private cache."""
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("cache")
    mp.setenv("NUDGEKIT_CACHE", str(cache))
    start = time.perf_counter()
    dirs = build_all("test", progress=False)
    yield {"dirs": dirs, "cache": cache, "seconds": time.perf_counter() - start}
    mp.undo()


def test_reduced_build_gives_loadable_hf_dirs_of_both_archs(zoo):
    assert set(zoo["dirs"]) == {f"{n}@test" for n in NAMES}
    kinds = {}
    for name, path in zoo["dirs"].items():
        assert path.name == f"{name}-{config_hash(name)}"
        assert path.parent == zoo["cache"] / "zoo"
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        assert tok.chat_template and tok.eos_token == "<|end|>"
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": "Start 1: inc"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits
        assert logits.shape == (1, ids.shape[1], len(tok))
        kinds[name.split("@")[0]] = (
            model.config.model_type,
            type(tok.backend_tokenizer.model).__name__,
            len(tok),
        )
        assert read_meta(path)["weight_hash"] == weight_hash(model)
    assert kinds["tiny-policy"][0] == "qwen2" and kinds["tiny-base-large"][0] == "llama"
    # The base and the small aligned model cut text differently (char vs trained BPE).
    assert kinds["tiny-base-large"][2] != kinds["tiny-aligned-small"][2]
    assert not list((zoo["cache"] / "zoo").glob(".*"))  # no temp dirs left behind


def test_second_resolve_is_cached(zoo):
    start = time.perf_counter()
    again = resolve("tiny-policy@test")
    assert again == zoo["dirs"]["tiny-policy@test"]
    assert time.perf_counter() - start < 1.0


def test_reduced_build_is_deterministic(zoo, tmp_path):
    name = "tiny-aligned-small@test"
    hashes = [
        build_into(name, spec_of(name), tmp_path / str(i), progress=False)["weight_hash"]
        for i in range(2)
    ]
    assert hashes[0] == hashes[1] == read_meta(zoo["dirs"][name])["weight_hash"]


def test_config_hash_tracks_the_config_and_parent():
    assert config_hash("tiny-policy") != config_hash("tiny-policy@test")
    assert config_hash("tiny-aligned-large") != config_hash("tiny-base-large")
    assert model_dir("tiny-policy@full") == model_dir("tiny-policy")
    with pytest.raises(NudgekitError, match="unknown model"):
        resolve("tiny-giant")
    with pytest.raises(NudgekitError, match="unknown variant"):
        resolve("tiny-policy@huge")
    # a build seed: its own cache key; the default seed names the default model
    assert model_dir("tiny-aligned-small@full-s0") == model_dir("tiny-aligned-small")
    assert spec_of("tiny-aligned-small@test-s2").seed == 2
    assert config_hash("tiny-aligned-small@test-s2") != config_hash("tiny-aligned-small@test")
    assert config_hash("tiny-aligned-large@test-s2") != config_hash("tiny-aligned-large@test")


def test_zoo_build_pipeline_writes_a_record(zoo, tmp_path):
    metrics = ZooBuild(models=["tiny-policy"], variant="test", progress=False).run(None, tmp_path)
    record = json.loads((tmp_path / "zoo_build.json").read_text())
    assert metrics["zoo/models"] == 1.0
    assert record["tiny-policy@test"]["path"] == str(zoo["dirs"]["tiny-policy@test"])
    with pytest.raises(NudgekitError, match="models"):
        ZooBuild(models=["nope"])


class _Tracker:
    def __init__(self):
        self.logged, self.tables, self.summaries = [], {}, []

    def log(self, metrics, step=None):
        self.logged.append(metrics)

    def log_table(self, name, rows):
        self.tables[name] = rows

    def summary(self, metrics):
        self.summaries.append(metrics)


def test_tinyworld_check_on_the_reduced_zoo(zoo, tmp_path):
    tracker = _Tracker()
    check = TinyWorldCheck(
        variant="test",
        n_easy=4,
        n_hard=4,
        n_format=4,
        samples=2,
        max_new_tokens=16,
        base_max_new_tokens=8,
    )
    metrics = check.run(tracker=tracker, run_dir=tmp_path)
    report = json.loads((tmp_path / "tinyworld_check.json").read_text())
    for prop in ("P1", "P2", "P3", "P4"):
        assert isinstance(report[prop]["holds"], bool)
    assert report["P1"]["n_hard"] == 4 and 0.0 <= report["P1"]["easy_pass@1"] <= 1.0
    assert set(report["P3"]) >= {"tiny-base-large", "tiny-aligned-small", "tiny-aligned-large"}
    assert report["P4"]["holds"] is True  # the rebuild matches the cache bit for bit
    table = (tmp_path / "tinyworld_check.md").read_text()
    assert table.startswith("| property |") and "| P4 |" in table
    assert tracker.tables["tinyworld_check"] and tracker.summaries
    assert metrics["tinyworld/P4/holds"] == 1.0
