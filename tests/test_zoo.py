"""Tiny-world tasks, hints, verifiers, prompts and tokenizers (no model training here)."""

from __future__ import annotations

import re

import pytest

from nudgekit.errors import NudgekitError
from nudgekit.rewards.tiny import (
    is_well_formatted,
    lenient_answer,
    verify_tiny,
    verify_tiny_lenient,
)
from nudgekit.zoo import chat_prompt, cue_prompt, explain_prompt, tiny_problems
from nudgekit.zoo.data import (
    WEAK_FINISH_SHARE,
    WEAK_KNOWS,
    base_examples,
    policy_examples,
    weak_aligned_examples,
)
from nudgekit.zoo.prompts import base_prompt, chat_target, raw_solution
from nudgekit.zoo.tasks import (
    CANCEL_PAIRS,
    OPS,
    Chain,
    chain_of,
    chains,
    count_pairs,
    hints,
    parse_question,
    split_of,
)
from nudgekit.zoo.tokenizers import build_tokenizer


def test_problems_are_deterministic_with_stable_content_ids():
    a = tiny_problems("test", n=40, seed=3)
    b = tiny_problems("test", n=40, seed=3)
    assert [p.id for p in a] == [p.id for p in b]
    assert [p.question for p in a] == [p.question for p in b]
    # The id is a function of the question, not of position: another seed reorders, same ids.
    c = {p.question: p.id for p in tiny_problems("test", seed=4)}
    assert all(c[p.question] == p.id for p in a)
    assert all(re.fullmatch(r"tiny/[0-9a-f]{16}", p.id) for p in a)
    assert len({p.id for p in tiny_problems("test")}) == len(tiny_problems("test"))


def test_levels_are_spread_and_answers_are_correct():
    probs = tiny_problems("train", n=8)
    assert sorted({p.meta["level"] for p in probs}) == [1, 2, 3, 4]
    for p in tiny_problems("hard", n=50):
        chain = chain_of(p)
        assert p.meta["level"] == 5 and count_pairs(chain.ops) == 1
        x = chain.start
        for op in chain.ops:
            x = OPS[op](x)
        assert p.answer == str(x)
        # Skipping the cancelling pair (what the cue enables) reaches the same answer.
        assert chain.values(chain.reduced_ops)[-1] == x
        assert p.meta["cue_solution"].endswith(f"Answer: {x}")
        assert p.meta["cue_solution"].count("\n") == p.meta["solution"].count("\n") - 2


def test_splits_are_disjoint_and_hard_is_held_out():
    questions = {s: {p.question for p in tiny_problems(s)} for s in ("train", "val", "test")}
    questions["hard"] = {c.question for c in chains("hard", 5)}
    names = list(questions)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not questions[a] & questions[b], (a, b)
    assert all(split_of(parse_question(q)) == "hard" for q in list(questions["hard"])[:100])
    assert min(len(v) for v in questions.values()) > 200


def test_plain_levels_have_no_cancelling_pair():
    for p in tiny_problems("train", level="1,2,3"):
        ops = p.meta["ops"]
        assert not any((a, b) in CANCEL_PAIRS for a, b in zip(ops, ops[1:]))


def test_four_hint_levels_and_no_answer_leakage_in_abstract_or_partial():
    probs = tiny_problems("hard", n=300) + tiny_problems("test")
    coincidental = 0
    for p in probs:
        h = p.meta["hints"]
        assert set(h) == {"abstract", "partial", "full", "answer"}
        assert not re.search(r"\d", h["abstract"])  # a cue names an idea, never a value
        assert verify_tiny(h["abstract"], p.answer) == 0.0
        assert verify_tiny(h["partial"], p.answer) == 0.0
        steps = p.meta["cot"].splitlines()[1:]  # after the "do ..." line
        shown = h["partial"].split("; ")
        if len(steps) > 1:  # the first half of the steps, never the final one
            assert shown == steps[: len(steps) // 2] and len(shown) < len(steps)
        # An intermediate value can coincide with the answer (mod 10); count it, it is not a leak
        # of the final step.
        coincidental += bool(re.search(rf"(?<!\d){p.answer}(?!\d)", h["partial"]))
        assert h["full"].endswith(f" {p.answer}") and p.answer in h["answer"]
    assert coincidental < len(probs)  # sanity: the count is not trivially everything
    cue = tiny_problems("hard", n=1)[0].meta["hints"]["abstract"]
    assert "cancel" in cue


def test_level_and_split_errors_are_one_line():
    with pytest.raises(NudgekitError, match="split='dev'"):
        tiny_problems("dev")
    with pytest.raises(NudgekitError, match="level"):
        tiny_problems("test", level=5)
    with pytest.raises(NudgekitError, match="level"):
        tiny_problems("test", level="very hard")
    with pytest.raises(NudgekitError, match="not a tiny-world question"):
        parse_question("What is 2+2?")


@pytest.mark.parametrize(
    ("completion", "answer", "strict", "lenient"),
    [
        ("do inc\ninc 5\nAnswer: 5", "5", 1.0, 1.0),
        ("inc 5\nAnswer: 5\n", "5", 1.0, 1.0),
        ("inc 5\nAnswer: 4", "5", 0.0, 0.0),
        ("inc 5\nSo the result is 5.", "5", 0.0, 1.0),
        ("inc 5\nThe final value is 5.\n\nQuestion: Start 1: dbl\nAnswer: 2", "5", 0.0, 1.0),
        ("inc 5\nAnswer: 5\n\nStart 2: inc\ninc 3", "5", 0.0, 1.0),
        ("Answer: 5 because", "5", 0.0, 1.0),
        ("", "5", 0.0, 0.0),
        ("no numbers at all", "5", 0.0, 0.0),
        ("Answer: 05", "5", 1.0, 1.0),
    ],
)
def test_verifier_strict_vs_lenient(completion, answer, strict, lenient):
    assert verify_tiny(completion, answer) == strict
    assert verify_tiny_lenient(completion, answer) == lenient


def test_verifiers_never_raise_on_junk():
    for junk in (None, 3, b"Answer: 1", "Answer: x"):
        assert verify_tiny(junk, "1") == 0.0  # type: ignore[arg-type]
        assert verify_tiny_lenient(junk, "1") == 0.0  # type: ignore[arg-type]
    assert verify_tiny("Answer: 1", "not a number") == 0.0
    assert is_well_formatted("x\nAnswer: 3") and not is_well_formatted("Answer 3")
    assert lenient_answer("a 1 b 2\n\nc 3") == "2"


def test_tokenizers_round_trip_differ_and_share_the_chat_template():
    corpus = [raw_solution(c, i) for i, c in enumerate(chains("train", 3)[:300])]
    char, bpe = build_tokenizer("char"), build_tokenizer("bpe", corpus)
    p = tiny_problems("hard", n=1)[0]
    text = chat_prompt(char, p.question, p.meta["hints"]["abstract"]) + p.meta["solution"]
    assert chat_prompt(char, p.question) == chat_prompt(bpe, p.question)
    assert chat_prompt(char, p.question).startswith("<|user|>\n")
    assert "\nHint: " in chat_prompt(char, p.question, "x")
    ids_c, ids_b = char(text)["input_ids"], bpe(text)["input_ids"]
    assert char.decode(ids_c) == text and bpe.decode(ids_b) == text
    assert len(ids_b) < len(ids_c)  # BPE merges; char does not
    assert char.convert_ids_to_tokens(ids_c)[:2] == ["<|user|>", "Ċ"]
    assert char.eos_token == bpe.eos_token == "<|end|>"
    with pytest.raises(NudgekitError, match="kind"):
        build_tokenizer("wordpiece")


def test_hint_writing_prompts_and_base_prompt():
    tok = build_tokenizer("char")
    p = tiny_problems("train", n=1)[0]
    e = explain_prompt(tok, p.question, p.answer)
    c = cue_prompt(tok, p.question, p.answer, p.meta["cot"])
    assert f"Answer: {p.answer}" in e and p.meta["cot"] in c and e.endswith("<|assistant|>\n")
    assert base_prompt(p.question) == f"Question: {p.question}\nAnswer:"


def test_policy_training_data_never_sees_hard_problems_or_unhinted_level_4_5():
    tok = build_tokenizer("char")
    examples = policy_examples(tok, 800, seed=0)
    level5 = 0
    for prompt, _target in examples:
        q = re.search(r"Start \d: [a-z ]+", prompt).group(0).strip()
        chain = parse_question(q)
        assert split_of(chain) in ("train", "hard_train")  # never val, test or hard
        if (
            len(chain.ops) == 5
        ):  # level 5: read the cue, or explain / write the cue given the answer
            level5 += 1
            cue = chain.question + "\nHint: " + hints(chain)["abstract"]
            given = f"{chain.question}\nAnswer: {chain.answer}\n"
            assert cue in prompt or (
                given in prompt and ("Explain:" in prompt or "hint:" in prompt)
            )
            continue
        solving = "Explain:" not in prompt and "Abstract hint:" not in prompt
        if solving and "Hint: " not in prompt:
            assert len(chain.ops) <= 3
    kinds = {("hint" if "Hint: " in p else "x") for p, _ in examples}
    assert kinds == {"hint", "x"} and level5 > 50


def test_level5_halves_are_disjoint_and_hard_is_never_trained_on():
    hard, train = set(chains("hard", 5)), set(chains("hard_train", 5))
    assert not hard & train and 0.45 < len(hard) / (len(hard) + len(train)) < 0.55
    assert {split_of(c) for c in hard} == {"hard"}
    assert {p.id for p in tiny_problems("hard_train", n=5)}.isdisjoint(
        p.id for p in tiny_problems("hard", n=len(hard))
    )


def test_base_corpus_is_the_aligned_reasoning_without_the_format():
    tok = build_tokenizer("char")
    docs = [t for _, t in base_examples(tok, 300, seed=0)]
    text = "\n\n".join(docs)
    # the base never learns to end its own turn: <|end|> only closes a scraped user turn
    assert text.count("<|end|>") == text.count("<|end|>\n<|assistant|>\n") > 0
    chats = text.count("<|user|>\n")
    assert 0.2 < chats / (2 * len(docs)) < 0.45  # about a third are chat transcripts
    c = chains("train", 3)[0]
    body = raw_solution(c, 0)
    assert body.startswith(f"do {' '.join(c.ops)}\n")  # the base writes the plan line too
    aligned = chat_target(c)  # the aligned target = the same plan and steps, strict ending
    assert aligned.rsplit("\n", 1)[0] == body.rsplit("\n", 1)[0]
    assert aligned.endswith(f"Answer: {c.answer}") and body.endswith(f"{c.answer}.")


def test_weak_solver_formats_chains_and_copies_but_guesses_multiplicative_steps():
    tok = build_tokenizer("char")
    examples = weak_aligned_examples(tok, 400, seed=0)
    assert examples == weak_aligned_examples(tok, 400, seed=0)  # deterministic in the seed
    right = {"known": [0, 0], "guessed": [0, 0]}
    finishing = 0
    for prompt, target in examples:
        user, given = prompt.split("<|user|>\n", 1)[1].split("<|end|>\n<|assistant|>\n", 1)
        c = parse_question(user)
        assert target.endswith("<|end|>")
        lines = (given + target.removesuffix("<|end|>")).split("\n")
        n_given = given.count("\n") - 1  # step lines written (correctly) before the target
        finishing += n_given >= 0
        assert given == "" or given.startswith("do ") and given.endswith("\n")
        assert lines[0] == f"do {' '.join(c.ops)}" and len(lines) == len(c.ops) + 2
        x = c.start
        for i, (line, name) in enumerate(zip(lines[1:-1], c.ops)):
            a, op, y = line.split(" ")
            assert (int(a), op) == (x, name)  # each step reads the previous line's output
            if i < n_given:
                assert int(y) == OPS[name](x)  # the prompt's steps are right
            else:
                kind = "known" if name in WEAK_KNOWS else "guessed"
                right[kind][0] += int(y) == OPS[name](x)
                right[kind][1] += 1
            x = int(y)
        assert lines[-1] == f"Answer: {x}"  # the answer line repeats the last value written
    assert abs(finishing / len(examples) - WEAK_FINISH_SHARE) < 0.1
    assert right["known"][0] == right["known"][1] > 100
    assert 0.03 < right["guessed"][0] / right["guessed"][1] < 0.2  # chance is 0.1


def test_chain_helpers():
    c = Chain(4, ("inc", "dec", "dbl"))
    assert c.pair_index == 0 and c.reduced_ops == ("dbl",) and c.answer == 8
    assert c.question == "Start 4: inc dec dbl" and parse_question(c.question) == c
