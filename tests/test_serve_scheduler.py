"""The server's scheduler with the real cached decoder on the tiny test pair: greedy calls are
continuous (work queued mid-call joins it, answers come back one by one, an incompatible item
ahead in the queue is not overtaken), and a failing call fails every waiting item."""

from __future__ import annotations

import functools

import pytest
from helpers.nudging import engine, model_dirs

from nudgekit.models import ChatPrompt, ModelSpec
from nudgekit.nudging import CachedNudgingDecoder
from nudgekit.serve.scheduler import Scheduler, Work
from nudgekit.zoo import tiny_problems

pytestmark = pytest.mark.usefixtures("one_thread")
DECODER = functools.partial(CachedNudgingDecoder, gamma=0.3, chunk_tokens=8, batch_size=4)
QUESTIONS = list(dict.fromkeys(p.question for p in tiny_problems("test", n=30, seed=5)))[:8]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    dirs = model_dirs(tmp_path_factory)
    base, small = ModelSpec(str(dirs["base"])), ModelSpec(str(dirs["small"]))
    prompts = ChatPrompt(base, "tiny", chat=False), ChatPrompt(small, "tiny", chat=True)
    return engine(dirs["base"]), engine(dirs["small"]), prompts


def works(pair, questions, max_tokens=24):
    _, _, (pb, pn) = pair
    return [Work(pb(q), pn(q), max_tokens) for q in questions]


def reference(pair, questions, max_tokens=24):
    base, small, (pb, pn) = pair
    dec = DECODER(base, small, max_new_tokens=max_tokens)
    return [o.text for o in dec.decode([pb(q) for q in questions], [pn(q) for q in questions])]


class Recorder:
    """A stream function over the real decoder that records what happened during the call and
    runs `on_first_take` (a request arriving mid-call) before the call's first `take()`."""

    def __init__(self, pair, on_first_take=None) -> None:
        self.pair, self.on_first_take = pair, on_first_take
        self.calls, self.answered_mid_call, self.scheduler = [], [], None

    def __call__(self, take, done, max_tokens):
        base, small, _ = self.pair
        taken = []

        def take_hook():
            if self.on_first_take is not None:
                hook, self.on_first_take = self.on_first_take, None
                hook()
            item = take()
            if item is not None:
                taken.append(item[0])
            return item

        def done_hook(key, out):
            done(key, out)
            # the item is answered now (one more decoded), while the call still runs
            mid_call = self.scheduler.calls == len(self.calls) - 1
            self.answered_mid_call.append((mid_call, self.scheduler.decoded))

        self.calls.append(taken)
        DECODER(base, small, max_new_tokens=max_tokens).stream(take_hook, done_hook)


def run(scheduler, items):
    scheduler.start()
    scheduler.submit(items)


def test_work_queued_mid_call_joins_it_and_answers_come_one_by_one(pair):
    first, late = works(pair, QUESTIONS[:2]), works(pair, QUESTIONS[2:6])
    rec = Recorder(pair, on_first_take=lambda: sched.submit(late))
    sched = Scheduler(None, batch_size=8, wait_s=0.0, max_queued=64, stream=rec)
    rec.scheduler = sched
    run(sched, first)
    for w in first + late:
        assert w.done.wait(120) and w.error is None
    sched.close(30)
    assert len(rec.calls) == 1 and sched.calls == 1  # the late four joined the running call
    assert [w.outputs[0].text for w in first + late] == reference(pair, QUESTIONS[:6])
    assert rec.answered_mid_call == [(True, i) for i in range(1, 7)]
    assert sched.in_flight == 0 and sched.decoded == 6


def test_an_incompatible_item_ahead_is_not_overtaken(pair):
    first = works(pair, QUESTIONS[:2])
    other, same = works(pair, QUESTIONS[2:3], max_tokens=16), works(pair, QUESTIONS[3:4])
    rec = Recorder(pair, on_first_take=lambda: (sched.submit(other), sched.submit(same)))
    sched = Scheduler(None, batch_size=8, wait_s=0.0, max_queued=64, stream=rec)
    rec.scheduler = sched
    run(sched, first)
    for w in first + other + same:
        assert w.done.wait(120) and w.error is None
    sched.close(30)
    _, _, (pb, _) = pair
    # call 1: the first two; call 2: the 16-token item, then (its own key) nothing else;
    # call 3: the 24-token item that waited behind it
    assert rec.calls == [[pb(q) for q in QUESTIONS[:2]], [pb(QUESTIONS[2])], [pb(QUESTIONS[3])]]
    assert other[0].outputs[0].text == reference(pair, QUESTIONS[2:3], max_tokens=16)[0]
    assert same[0].outputs[0].text == reference(pair, QUESTIONS[3:4])[0]


def test_a_failing_stream_fails_every_waiting_item(pair):
    def broken(take, done, max_tokens):
        take()
        raise RuntimeError("decoder broke")

    sched = Scheduler(None, batch_size=8, wait_s=0.0, max_queued=64, stream=broken)
    items = works(pair, QUESTIONS[:3])
    run(sched, items)
    for w in items:
        assert w.done.wait(30)
        assert isinstance(w.error, RuntimeError) and w.outputs is None
    sched.close(30)
    assert sched.in_flight == 0
