import numpy as np
import pandas as pd
import pytest

from helpers.evaluate import (INVALID, classification_metrics, expected_calibration_error, fine_tuned_margin,
                              metrics_summary, mistakes_near_threshold, most_confident_mistakes, normalise_rows,
                              parse_label)

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


def test_fine_tuned_margin_needs_both_sides():
    rows = [{"method": "fine-tuned a", "macro_f1": 0.5}, {"method": "other", "macro_f1": 0.6}]
    assert fine_tuned_margin(rows, [], "few-shot prompt").startswith("Nothing to compare: the table needs a few-shot")
    assert fine_tuned_margin(rows, rows[1:], "rival").endswith("did not beat the best rival (other, 0.600): -0.100 macro-F1.")


def test_normalise_rows_is_a_stable_softmax():
    probs = normalise_rows([[0.0, 0.0, 0.0], [1000.0, 0.0, -1000.0]])
    assert np.allclose(probs[0], 1 / 3) and probs[1].tolist() == [1.0, 0.0, 0.0]


def test_metrics_summary_keeps_the_scores_and_drops_the_per_review_lists():
    full = {**classification_metrics(["positive", "negative"], ["positive", "positive"], LABELS), "method": "scoring",
            "reviews_per_second": 3.0, "predictions": ["positive", "positive"], "probabilities": [[0, 0, 1]] * 2}
    summary = metrics_summary(full)
    assert set(summary) == {"accuracy", "macro_f1", "invalid_rate", "reviews_per_second", "per_class", "confusion"}
    assert summary["accuracy"] == 0.5 and summary["confusion"] == full["confusion"]
