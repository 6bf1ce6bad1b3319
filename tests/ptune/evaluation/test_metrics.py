"""Every metric against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from ptune.errors import ConfigError
from ptune.evaluation.metrics import (
    METRICS,
    compute_metrics,
    em,
    exact_match,
    f1_macro,
    f1a,
    get_metric,
    mcc,
    normalize_answer,
    rouge_scores,
    split_sentences,
    squad_em,
    squad_f1,
)

REFS = ["a", "a", "a", "b", "b", "c"]
PREDS = ["a", "a", "b", "b", "c", "c"]


def test_accuracy():
    assert get_metric("accuracy")(PREDS, REFS) == pytest.approx(4 / 6)
    assert get_metric("accuracy")([" yes"], ["yes "]) == 1.0


def test_f1_macro_cb_style():
    # a: tp2 fp0 fn1 -> 4/5 ; b: tp1 fp1 fn1 -> 2/4 ; c: tp1 fp1 fn0 -> 2/3
    assert f1_macro(PREDS, REFS) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # with the label set given, an invalid output is a miss for its class, not a fourth class;
    # class d has no support and no prediction -> 0 (sklearn's convention)
    preds = ["a", "a", "zzz", "b", "c", "c"]  # a: 4/5, b: tp1 fp0 fn1 -> 2/3, c: 2/3
    assert f1_macro(preds, REFS, label_words=("a", "b", "c")) == pytest.approx((0.8 + 2 / 3 + 2 / 3) / 3)
    assert f1_macro(preds, REFS, label_words=("a", "b", "c", "d")) == pytest.approx((0.8 + 2 / 3 + 2 / 3) / 4)


def test_mcc_binary_and_multiclass():
    # binary: tp=2 (1,1) tn=1 fp=1 fn=1 -> (2*1-1*1)/sqrt(3*3*2*2) = 1/6
    refs, preds = ["1", "1", "1", "0", "0"], ["1", "1", "0", "1", "0"]
    assert mcc(preds, refs) == pytest.approx(1 / 6)
    # multiclass (Gorodkin): n=6, correct=4, t=(3,2,1), p=(2,2,2)
    # cov = 6*4 - (3*2+2*2+1*2) = 12 ; sqrt((36-12)*(36-14)) = sqrt(528)
    assert mcc(PREDS, REFS) == pytest.approx(12 / math.sqrt(528))
    assert mcc(["a", "a"], ["a", "b"]) == 0.0  # constant prediction
    assert mcc(REFS, REFS) == pytest.approx(1.0)


def test_multirc_f1a_and_question_em():
    refs = ["True", "False", "True", "False", "True"]
    preds = ["True", "True", "True", "False", "False"]
    qids = ["q1", "q1", "q2", "q2", "q3"]
    # positive class True: tp=2 fp=1 fn=1 -> 4/6
    assert f1a(preds, refs, label_words=("False", "True")) == pytest.approx(2 / 3)
    # q1 wrong (second option), q2 right, q3 wrong -> 1/3
    assert em(preds, refs, group_ids=qids) == pytest.approx(1 / 3)
    assert f1a(["False"], ["False"], label_words=("False", "True")) == 0.0  # no positive at all


def test_record_squad_em_f1_max_over_answers():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple a day") == "apple day"
    preds = ["the Eiffel Tower", "Paris France", "London"]
    answers = [["Eiffel Tower"], ["Paris", "France"], ["Berlin"]]
    # EM: 1, 0, 0 ; F1: 1 ; max(2*.5*1/1.5, same) = 2/3 ; 0
    assert squad_em(preds, ["x"] * 3, answers=answers) == pytest.approx(1 / 3)
    assert squad_f1(preds, ["x"] * 3, answers=answers) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert em(preds, answers) == pytest.approx(1 / 3)  # no group ids: SQuAD-style EM
    assert get_metric("f1")(["New York city"], ["new york"]) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


def test_exact_match_is_case_and_space_insensitive():
    assert exact_match(["Positive ", "neg"], ["positive", "negative"]) == 0.5


def test_rouge_by_hand():
    # "the cat sat" vs reference "the cat sat down": unigrams P=3/3 R=3/4 -> F=6/7; bigrams 2/2,2/3 -> 4/5
    s = rouge_scores("the cat sat", "the cat sat down")
    assert s["rouge1"] == pytest.approx(100 * 6 / 7)
    assert s["rouge2"] == pytest.approx(100 * 4 / 5)
    assert s["rougeL"] == pytest.approx(100 * 6 / 7)
    # stemming: "cats running" matches "cat runs"
    assert rouge_scores("cats running", "cat runs")["rouge1"] == pytest.approx(100.0)


def test_rouge_lsum_uses_sentence_split():
    pred, ref = "b c. a x.", "a x. b c."
    scores = rouge_scores(pred, ref)
    # one sequence: LCS("b c a x", "a x b c") = 2 -> F=0.5 ; per sentence: union LCS covers all 4 -> F=1
    assert scores["rougeL"] == pytest.approx(50.0)
    assert scores["rougeLsum"] == pytest.approx(100.0)


def test_split_sentences_regex():
    assert split_sentences("Hello there. How are you? Fine!\nNext line") == [
        "Hello there.", "How are you?", "Fine!", "Next line"]
    assert split_sentences('He said "stop." Then left.') == ['He said "stop."', "Then left."]
    assert split_sentences("Costs 3.5 dollars.") == ["Costs 3.5 dollars."]


def test_rouge_metrics_average_and_scale():
    fn = get_metric("rouge1")
    assert fn(["the cat sat", "dog"], ["the cat sat down", "dog"]) == pytest.approx((100 * 6 / 7 + 100) / 2)


def test_registry_names_and_unknown_metric():
    expected = {"accuracy", "f1_macro", "mcc", "f1a", "em", "f1", "rouge1", "rouge2", "rougeL", "rougeLsum",
                "exact_match"}
    assert set(METRICS) == expected
    with pytest.raises(ConfigError, match=r"unknown metric 'bleu'; known metrics: accuracy, em, exact_match"):
        get_metric("bleu")
    with pytest.raises(ConfigError, match="bleu"):
        compute_metrics(["accuracy", "bleu"], ["a"], ["a"])


def test_compute_metrics_keys_in_order():
    out = compute_metrics(["f1_macro", "accuracy"], PREDS, REFS, split="validation", group_ids=None,
                          label_words=("a", "b", "c"))
    assert list(out) == ["validation/f1_macro", "validation/accuracy"]
    assert out["validation/accuracy"] == pytest.approx(4 / 6)


def test_length_mismatch_and_empty_are_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        get_metric("accuracy")(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        get_metric("mcc")([], [])
