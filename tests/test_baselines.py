import numpy as np
import pandas as pd
import pytest

from helpers.baselines import (baseline_verdict, majority_class, run_baselines, tfidf_logreg, vader, vader_label)

LABELS = ("negative", "neutral", "positive")
TRAIN = pd.DataFrame({"text": ["great great phone", "love it great", "awful junk", "broke awful", "a phone box",
                               "the box is a box", "great value love"],
                      "label": ["positive", "positive", "negative", "negative", "neutral", "neutral", "positive"]})
TEST = pd.DataFrame({"text": ["great love", "awful broke", "zebra unicorn"], "label": ["positive", "negative", "neutral"]})


def test_majority_class_is_the_most_frequent_training_label():
    run = majority_class(TRAIN, TEST, LABELS)
    assert run["predictions"] == ["positive"] * 3 and run["probabilities"][:, 2].tolist() == [1, 1, 1]
    tie = pd.DataFrame({"text": ["a", "b"], "label": ["positive", "negative"]})
    assert majority_class(tie, TEST, LABELS)["predictions"][0] == "negative"  # ties: first in label order


def test_tfidf_is_fitted_on_the_training_split_only():
    run = tfidf_logreg(TRAIN, TEST, LABELS)
    assert run["predictions"][:2] == ["positive", "negative"]
    assert np.allclose(run["probabilities"].sum(1), 1) and run["fit_seconds"] >= 0
    # words that only occur in the test split are unknown to the fitted vectoriser: its row is the prior alone
    empty = tfidf_logreg(TRAIN, pd.DataFrame({"text": ["qqq"], "label": ["neutral"]}), LABELS)["probabilities"]
    assert np.allclose(run["probabilities"][2], empty[0])


def test_tfidf_keeps_label_order_when_a_class_is_missing_from_training():
    run = tfidf_logreg(TRAIN[TRAIN["label"] != "neutral"], TEST, LABELS)
    assert run["probabilities"].shape == (3, 3) and (run["probabilities"][:, 1] == 0).all()


@pytest.mark.parametrize("compound, label", [(0.05, "positive"), (0.0499, "neutral"), (-0.0499, "neutral"),
                                             (-0.05, "negative"), (0.9, "positive"), (-0.9, "negative")])
def test_vader_thresholds_at_the_edges(compound, label):
    assert vader_label(compound) == label


def test_vader_runs_offline_on_real_text():
    run = vader(pd.DataFrame({"text": ["I love this, it is great!", "This is terrible and broken.", "It is a box."]}))
    assert run["predictions"] == ["positive", "negative", "neutral"] and run["probabilities"] is None


def test_run_baselines_scores_all_three_like_any_model(cfg):
    rows = run_baselines(cfg, TRAIN, TEST)
    assert [r["method"] for r in rows] == ["majority class", "VADER (rules, no training)", "TF-IDF + logistic regression"]
    assert rows[0]["accuracy"] == pytest.approx(1 / 3) and all("macro_f1" in r and r["cost_per_1000_usd"] == 0 for r in rows)


def test_baseline_verdict_ties_inside_the_noise_and_beats_outside_it(cfg):
    gold = list(np.array(cfg.labels)[np.arange(60) % 3])
    almost, wrong = ["neutral"] + gold[1:], [cfg.labels[(cfg.labels.index(g) + 1) % 3] for g in gold]
    tuned = {"method": "fine-tuned x", "macro_f1": 0.983, "predictions": almost}
    close = [tuned, {"method": "TF-IDF + logistic regression", "macro_f1": 1.0, "predictions": gold}]
    assert baseline_verdict(close, gold, cfg).startswith(
        "The best fine-tuned model (fine-tuned x, macro-F1 0.983) tied with the best classic baseline (TF-IDF + "
        "logistic regression, 1.000): -0.017, 95 % interval ")
    far = [tuned, {"method": "VADER (rules, no training)", "macro_f1": 0.0, "predictions": wrong}]
    assert " beat the best classic baseline (VADER (rules, no training), 0.000): +0.983" in baseline_verdict(far, gold, cfg)
