import numpy as np
import pandas as pd
import pytest

from sklearn.metrics import f1_score

from helpers.evaluate import (INVALID, apply_offsets, classification_metrics, decision_effect, decision_rule,
                              expected_calibration_error, fine_tuned_margin, macro_f1_rows, metrics_summary,
                              mistakes_near_threshold, most_confident_mistakes, normalise_rows, paired_bootstrap,
                              paired_mean_difference, parse_label, verdict)

LABELS = ("negative", "neutral", "positive")


@pytest.mark.parametrize("answer, label", [
    ("Positive.", "positive"), (" negative\n", "negative"), ("NEUTRAL", "neutral"), ("positive!!", "positive"),
    ("Sentiment", INVALID), ("", INVALID), ("not positive", INVALID), ("positive or negative", INVALID),
    ("  neutral - mixed", "neutral"), ("posit", INVALID), ("negative, negative", "negative")])
def test_parse_label_on_tricky_answers(answer, label):
    assert parse_label(answer, LABELS) == label


@pytest.mark.parametrize("labels, answer, label", [
    (("1", "2", "3", "4", "5"), "5 stars", "5"), (("1", "2", "3", "4", "5"), "10", INVALID),
    (("1", "2", "3", "4", "5"), "3 or 4", INVALID), (("negative", "positive"), "Positive.", "positive"),
    (("very negative", "negative", "neutral", "positive", "very positive"), "Very positive!", "very positive"),
    (("very negative", "negative", "neutral", "positive", "very positive"), "positive", "positive"),
    (("very negative", "negative", "neutral", "positive", "very positive"), "very positive, positive", INVALID)])
def test_parse_label_on_other_label_sets(labels, answer, label):
    assert parse_label(answer, labels) == label


def test_metrics_on_hand_made_predictions():
    gold = ["positive", "positive", "negative", "neutral"]
    pred = ["positive", "negative", "negative", INVALID]
    m = classification_metrics(gold, pred, LABELS)
    assert m["accuracy"] == 0.5 and m["invalid_rate"] == 0.25 and m["n"] == 4
    # F1: negative 2/3 (p=.5, r=1), neutral 0, positive 2/3 (p=1, r=.5) -> macro 4/9
    assert m["macro_f1"] == pytest.approx(4 / 9)
    assert m["per_class"]["positive"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["confusion"] == {"labels": [*LABELS, INVALID], "matrix": [[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]]}


def test_metrics_refuse_mismatched_lengths():
    with pytest.raises(ValueError, match="as many predictions as gold labels"):
        classification_metrics(["positive"], [], LABELS)


def test_calibration_error_of_calibrated_and_of_confidently_wrong_probabilities():
    # 10 answers at confidence 0.8, 8 of them right: perfectly calibrated
    probs = [[0.1, 0.1, 0.8]] * 10
    gold = ["positive"] * 8 + ["negative"] * 2
    assert expected_calibration_error(probs, gold, LABELS)["ece"] == pytest.approx(0.0)
    wrong = expected_calibration_error([[1.0, 0.0, 0.0]] * 4, ["positive"] * 4, LABELS)
    assert wrong["ece"] == pytest.approx(1.0) and wrong["bins"] == [{"confidence": 1.0, "accuracy": 0.0, "count": 4}]


def test_mistakes_are_ordered_by_confidence_and_counted_near_the_threshold():
    df = pd.DataFrame({"text": list("abcd"), "label": ["positive", "negative", "neutral", "positive"],
                       "rating": [1.1, -3.0, 0.2, 2.5]})
    preds = ["neutral", "positive", "neutral", "negative"]
    probs = [[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.6, 0.2, 0.2]]
    top = most_confident_mistakes(df, preds, probs, LABELS)
    assert list(top["text"]) == ["b", "d", "a"] and list(top["probability"]) == [0.8, 0.6, 0.5]
    counts = mistakes_near_threshold(df, preds, threshold=1.0, margin=0.5)
    assert counts == {"mistakes": 3, "graded_mistakes": 3, "near_threshold": 1, "share_of_test_near_threshold": 0.25}


def test_row_wise_macro_f1_equals_sklearn():
    rng = np.random.default_rng(0)
    gold, pred = (np.array(LABELS)[rng.integers(3, size=(5, 40))] for _ in range(2))
    pred[0] = "positive"  # a label never predicted: F1 0 for the others, as sklearn with zero_division=0
    expected = [f1_score(g, p, labels=list(LABELS), average="macro", zero_division=0) for g, p in zip(gold, pred)]
    assert macro_f1_rows(gold, pred, LABELS) == pytest.approx(expected)


GOLD = list(np.array(LABELS)[np.arange(60) % 3])
ALMOST = ["neutral"] + GOLD[1:]  # one answer of 60 differs: inside any test set's noise
WRONG = [LABELS[(LABELS.index(g) + 1) % 3] for g in GOLD]


def row(method, predictions):
    return {"method": method, "predictions": predictions,
            "macro_f1": classification_metrics(GOLD, predictions, LABELS)["macro_f1"]}


def test_paired_bootstrap_calls_equal_predictions_a_tie_and_a_clear_gap_a_win():
    assert paired_bootstrap(GOLD, GOLD, GOLD, LABELS) == {"difference": 0.0, "low": 0.0, "high": 0.0}
    gap = paired_bootstrap(GOLD, GOLD, WRONG, LABELS)
    assert gap["difference"] == 1.0 and gap["low"] > 0.5
    with pytest.raises(ValueError, match="score both on the same test rows"):
        paired_bootstrap(GOLD, GOLD[:-1], GOLD, LABELS)


def test_verdict_says_tied_inside_the_noise_and_names_the_winner_either_way_round():
    tie = verdict(GOLD, row("B", ALMOST), row("A", GOLD), LABELS)
    assert (tie["tie"], tie["outcome"], tie["winner"]) == (True, "tied", None)
    assert tie["sentence"].startswith("B (0.983 macro-F1) and A (1.000) are tied within the test set's noise (-0.017, "
                                      "95 % interval ")
    behind = verdict(GOLD, row("C", WRONG), row("A", GOLD), LABELS)
    assert (behind["outcome"], behind["winner"]) == ("behind", "A")
    assert behind["sentence"] == "A (1.000 macro-F1) beats C (0.000) by 1.000 (95 % interval +1.000 to +1.000)."
    assert verdict(GOLD, row("A", GOLD), row("C", WRONG), LABELS)["outcome"] == "ahead"


def test_fine_tuned_margin_beats_ties_or_falls_behind_by_the_bootstrap():
    tuned = row("fine-tuned a", GOLD)
    said = fine_tuned_margin(GOLD, [tuned], [row("other", WRONG)], "rival", LABELS)
    assert said.startswith("The best fine-tuned model (fine-tuned a, macro-F1 1.000) beat the best rival (other, 0.000): "
                           "+1.000, 95 % interval +1.000 to +1.000")
    tied = fine_tuned_margin(GOLD, [tuned], [row("other", ALMOST)], "rival", LABELS)
    assert " tied with the best rival (other, 0.983): +0.017, 95 % interval " in tied and tied.endswith(
        "(a tie: the test set cannot tell them apart).")
    behind = fine_tuned_margin(GOLD, [row("fine-tuned b", WRONG)], [tuned], "rival", LABELS)
    assert " fell behind the best rival " in behind


def test_fine_tuned_margin_needs_both_sides_with_predictions():
    rows = [{"method": "fine-tuned a", "macro_f1": 0.5, "predictions": GOLD}, {"method": "other", "macro_f1": 0.6}]
    assert fine_tuned_margin(GOLD, rows, [], "few-shot prompt", LABELS).startswith(
        "Nothing to compare: the table needs a few-shot")
    assert fine_tuned_margin(GOLD, rows, rows[1:], "rival", LABELS).startswith("Nothing to compare")


def under_predicting(neutral_shift: float, n: int = 300, seed: int = 0):
    """Probabilities of a model that is right more often than not but pushes "neutral" down by `neutral_shift`."""
    rng = np.random.default_rng(seed)
    gold = np.array(LABELS)[np.arange(n) % 3]
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), np.arange(n) % 3] += 1.5
    logits[:, 1] -= neutral_shift
    return normalise_rows(logits), list(gold)


def test_offsets_shift_the_probabilities_and_none_leaves_them():
    probs = np.array([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])
    assert apply_offsets(probs, None) is not None and np.allclose(apply_offsets(probs, None), probs)
    moved = apply_offsets(probs, [0.0, np.log(4), 0.0])
    assert np.allclose(moved.sum(1), 1) and moved[0].argmax() == 1  # 0.2 * 4 = 0.8 against 0.5 and 0.3
    assert np.allclose(apply_offsets(moved, [0.0, -np.log(4), 0.0]), probs)


def test_a_rare_class_gets_an_offset_only_when_the_eval_bootstrap_says_it_pays():
    probs, gold = under_predicting(2.0)
    rule = decision_rule(probs, gold, LABELS)
    assert rule["rule"] == "offsets" and rule["offsets"][0] == 0 and rule["offsets"][1] > 1
    assert rule["eval"]["offsets"]["macro_f1"] > rule["eval"]["argmax"]["macro_f1"] + 0.1
    assert rule["eval"]["argmax"]["per_class_f1"]["neutral"] < rule["eval"]["offsets"]["per_class_f1"]["neutral"]
    assert rule["sentence"].startswith("Decision rule, chosen on 300 eval rows: per-class offsets {'negative': 0.0, ")
    balanced = decision_rule(*under_predicting(0.0), LABELS)
    assert balanced["rule"] == "argmax" and balanced["offsets"] is None
    assert "the most probable label (per-class offsets did not beat it)" in balanced["sentence"]
    assert "tied within the eval split's noise" in balanced["sentence"]


def test_the_decision_effect_shows_both_rules_from_the_rule_s_probabilities():
    probs, gold = under_predicting(2.0)
    offsets = [0.0, 2.0, 0.0]
    effect = decision_effect(apply_offsets(probs, offsets), gold, LABELS, offsets)
    plain = classification_metrics(gold, [LABELS[i] for i in probs.argmax(1)], LABELS)
    assert effect["most probable label"]["macro-F1"] == pytest.approx(plain["macro_f1"])
    assert effect["decision rule"]["neutral"] > effect["most probable label"]["neutral"]
    same = decision_effect(probs, gold, LABELS, None)
    assert same["most probable label"] == same["decision rule"]


def test_a_paired_mean_difference_has_the_bootstrap_s_interval_and_draws():
    always, never, half = [1.0] * 40, [0.0] * 40, [1.0, 0.0] * 20
    assert paired_mean_difference(never, always) == {"difference": -1.0, "low": -1.0, "high": -1.0}
    test = paired_mean_difference(half, never, seed=3)
    assert test["difference"] == 0.5 and 0.3 < test["low"] < 0.5 < test["high"] < 0.7
    assert paired_mean_difference(half, never, seed=3) == test  # the same seed, the same draws
