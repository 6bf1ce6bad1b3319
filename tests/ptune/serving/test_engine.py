"""Continuous batching: rows that join and leave a running decode batch give the tokens each row gives alone
(left padding, mixed prompt lengths, T5 too), a finished row's slot goes to a waiting row at the next step, a
classification request is answered while a long generation runs, and a failing pass fails only its requests."""

from __future__ import annotations

import threading

import pytest
import torch

from ptune.data.catalog import get_task
from ptune.model.generate import cut_at_stop, generate_ids
from ptune.serving.decode import DecodeBatch
from ptune.serving.engine import ContinuousBatcher
from ptune.serving.multi_prompt import MultiPromptModel, Row
from ptune.serving.sampling import Sampling
from tests.ptune.serving.test_multi_prompt import TEXTS, loaded

# (task, text, max tokens, step at which the row joins): xsum and intent have prompts of 5 and 1 tokens, and the
# texts run from 1 to ~70 tokens, so every batch holds left padding of several widths
SCHEDULE = [("xsum", TEXTS[1], 9, 0), ("intent", TEXTS[0], 4, 0), ("xsum", TEXTS[2], 12, 2),
            ("intent", TEXTS[3], 7, 3), ("xsum", TEXTS[0], 3, 3), ("intent", TEXTS[1], 10, 8)]


def varied(base):
    """The tiny model with every matrix redrawn at std 0.5 (seeded): its untrained weights give one token over
    and over, whatever the input; these give tokens that depend on the prompt, the text and the position, so
    an equality below can fail."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in base.model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return base


def member(model: MultiPromptModel, task: str, text: str, max_tokens: int, stop: tuple[str, ...] = ()):
    [row] = model.mixed_rows(model.snapshot()[task], Row(task, text))
    return row.__class__(**{**row.__dict__, "sampling": Sampling(max_tokens, stop)})


def alone_ids(model: MultiPromptModel, task: str, text: str, max_tokens: int) -> list[int]:
    """Greedy generation of one row on its own (`generate()`, the evaluation path)."""
    [row] = model.mixed_rows(model.snapshot()[task], Row(task, text))
    return generate_ids(model.base, [row.source_ids], model.snapshot()[task].prompt, max_tokens)[0]


@pytest.mark.parametrize("kind", ["causal-cached", "causal-plain", "causal-nobos", "t5"])
def test_rows_joining_and_leaving_give_the_tokens_each_row_gives_alone(request, tmp_path, kind):
    base = varied(request.getfixturevalue({"t5": "tiny_t5", "causal-nobos": "tiny_causal_nobos"}.get(kind, "tiny_causal")))
    model = loaded(tmp_path, base, cache_prefix=kind != "causal-plain")
    batch, done, step, sizes = DecodeBatch(base), {}, 0, []
    with model.compute():
        while len(done) < len(SCHEDULE):
            joining = [(i, member(model, task, text, n)) for i, (task, text, n, at) in enumerate(SCHEDULE) if at == step]
            done.update(batch.join(joining))
            sizes.append(len(batch))
            done.update(batch.step())
            step += 1
    for i, (task, text, n, _) in enumerate(SCHEDULE):
        assert list(done[i].ids) == alone_ids(model, task, text, n), (kind, i)
        assert done[i].finish == ("length" if len(done[i].ids) == n else "stop")
    assert max(sizes) >= 4 and 0 < min(sizes[:9])  # rows overlapped, the batch never ran empty mid-schedule
    if kind.startswith("causal"):
        assert batch.mask is None  # every row left; a running batch drops columns no row uses any more


def test_a_stop_string_ends_only_its_row(tmp_path, tiny_causal):
    model, tok = loaded(tmp_path, varied(tiny_causal)), tiny_causal.tokenizer
    ids = alone_ids(model, "xsum", TEXTS[1], 12)
    full = tok.decode(ids, skip_special_tokens=True).strip()
    k = next(k for k in range(3, 12) if tok.decode(ids[k:k + 1]).strip() and tok.decode(ids[k:k + 1]).strip()
             not in tok.decode(ids[:k]))
    stop = tok.decode(ids[k:k + 1]).strip()  # a piece the row reaches after a few tokens, not before
    batch = DecodeBatch(tiny_causal)
    with model.compute():
        done = dict(batch.join([(0, member(model, "xsum", TEXTS[1], 12, (stop,))),
                                (1, member(model, "xsum", TEXTS[2], 12))]))
        while batch:
            done.update(batch.step())
    assert done[0].finish == "stop" and done[0].text == cut_at_stop(full, [stop]) and len(done[0].ids) < 12
    assert done[1].finish == "length" and list(done[1].ids) == alone_ids(model, "xsum", TEXTS[2], 12)


def test_a_finished_rows_slot_goes_to_a_waiting_row_at_the_next_step(tmp_path, tiny_causal):
    """Two slots, three rows of one request: the short row's slot is the third row's at the next step, so the
    batch runs full until the long rows end (static batching would run the third row alone afterwards)."""
    model = loaded(tmp_path, varied(tiny_causal))
    assert [len(alone_ids(model, "xsum", TEXTS[i], n)) for i, n in ((1, 2), (2, 10), (3, 10))] == [2, 10, 10]
    sizes: list[int] = []
    rows = [Row("xsum", TEXTS[i], sampling=Sampling(n)) for i, n in ((1, 2), (2, 10), (3, 10))]
    batcher = ContinuousBatcher(model, max_batch_size=2, on_batch=lambda n, _: sizes.append(n))
    try:
        preds = batcher.submit(rows).result(timeout=120)
    finally:
        batcher.close()
    for pred, (i, n) in zip(preds, ((1, 2), (2, 10), (3, 10)), strict=True):
        want = tiny_causal.tokenizer.decode(alone_ids(model, "xsum", TEXTS[i], n), skip_special_tokens=True)
        assert pred.label == cut_at_stop(want, ()), i
    assert sizes[:2] == [2, 2]  # step 1: rows 1 and 2; step 2: row 2 and row 3, which took row 1's slot
    assert len(sizes) <= 11 < 2 + 9 + 9  # one pass through the long rows, not two


def test_classification_is_answered_while_a_long_generation_runs(tmp_path, tiny_causal):
    """A classification request that arrives during a 30-token generation is answered at the next step, with
    the scores `predict` gives it."""
    model = loaded(tmp_path, varied(tiny_causal))
    assert len(alone_ids(model, "xsum", TEXTS[1], 30)) == 30  # the generation runs its whole length
    steps, late = [], {}
    cls_row = Row("rotten_tomatoes", TEXTS[2])

    def on_batch(n_rows: int, n_requests: int) -> None:  # on the model's thread, after each pass
        steps.append(n_rows)
        if len(steps) == 1:
            late["future"] = batcher.submit([cls_row])
            late["future"].add_done_callback(lambda _: late.setdefault("steps", len(steps)))

    batcher = ContinuousBatcher(model, on_batch=on_batch)
    try:
        gen = batcher.submit([Row("xsum", TEXTS[1], sampling=Sampling(30))])
        gen.result(timeout=120)
        [pred] = late["future"].result(timeout=120)
    finally:
        batcher.close()
    assert late["steps"] <= 3  # the decode step it arrived in, then its own pass; not the 29 steps left
    [want] = model.predict([cls_row])
    assert pred.label == want.label
    torch.testing.assert_close(torch.tensor(list(pred.scores.values())), torch.tensor(list(want.scores.values())))


def test_greedy_and_classification_rows_of_one_request_answer_as_predict_does(tmp_path, tiny_causal):
    model = loaded(tmp_path, varied(tiny_causal))
    rows = [Row(task, text) for text in TEXTS for task in ("rotten_tomatoes", "xsum", "vitaminc", "intent")]
    batcher = ContinuousBatcher(model, max_batch_size=3)
    try:
        futures = [batcher.submit(rows[i:i + 5]) for i in range(0, len(rows), 5)]
        got = [p for f in futures for p in f.result(timeout=120)]
    finally:
        batcher.close()
    want = model.predict(rows)
    assert [(p.task, p.label, p.version) for p in got] == [(p.task, p.label, p.version) for p in want]
    assert all(p.tokens[0] == w.tokens[0] > 0 for p, w in zip(got, want, strict=True))
    assert get_task("xsum").kind == "generation"


def test_a_failing_pass_fails_its_requests_and_the_next_ones_are_answered(tmp_path, tiny_causal, monkeypatch):
    model = loaded(tmp_path, tiny_causal)
    batcher = ContinuousBatcher(model)
    real, failed = DecodeBatch.step, threading.Event()

    def broken(self):  # the fault: the first decode step raises
        if not failed.is_set():
            failed.set()
            raise RuntimeError("injected fault")
        return real(self)

    monkeypatch.setattr(DecodeBatch, "step", broken)
    try:
        first = batcher.submit([Row("xsum", TEXTS[1], sampling=Sampling(5))])
        with pytest.raises(RuntimeError, match="injected fault"):
            first.result(timeout=120)
        [again] = batcher.submit([Row("xsum", TEXTS[1], sampling=Sampling(5))]).result(timeout=120)
        [label] = batcher.submit([Row("rotten_tomatoes", TEXTS[0])]).result(timeout=120)
    finally:
        batcher.close()
    assert again.tokens[1] == len(alone_ids(model, "xsum", TEXTS[1], 5)) and label.label in ("positive", "negative")
    assert batcher.pending == 0


def test_unknown_task_and_close_answer_every_request(tmp_path, tiny_causal):
    model = loaded(tmp_path, tiny_causal)
    batcher = ContinuousBatcher(model)
    with pytest.raises(Exception, match="unknown task"):
        batcher.submit([Row("nope", "x")]).result(timeout=60)
    with model.compute():  # the model is busy: the next request is still waiting when the server closes
        waiting = batcher.submit([Row("xsum", TEXTS[1], sampling=Sampling(50))])
        closing = threading.Thread(target=batcher.close)
        closing.start()
    closing.join(timeout=120)
    assert waiting.done()  # answered, or failed because the server closed: never left hanging
    assert waiting.exception() is None or "shutting down" in str(waiting.exception())


def test_prefill_tokens_bound_how_many_rows_start_in_one_step(tmp_path, tiny_causal):
    """With a budget of one row's tokens, three waiting rows start one a step (one row always starts)."""
    model = loaded(tmp_path, varied(tiny_causal))
    sizes: list[int] = []
    rows = [Row("xsum", TEXTS[i], sampling=Sampling(8)) for i in (1, 2, 3)]
    batcher = ContinuousBatcher(model, prefill_tokens=1, on_batch=lambda n, _: sizes.append(n))
    try:
        preds = batcher.submit(rows).result(timeout=120)
    finally:
        batcher.close()
    assert sizes[:3] == [1, 2, 3]
    assert [p.tokens[1] for p in preds] == [len(alone_ids(model, "xsum", TEXTS[i], 8)) for i in (1, 2, 3)]
