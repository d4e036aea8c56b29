"""The baselines a sceptic asks for first: the majority class, TF-IDF + logistic regression, and VADER.

Each returns the same shape the evaluation helpers score — predictions (and class probabilities where the method
has them) plus fit time and reviews per second — so they sit in the same table as the LLMs. TF-IDF is fitted on the
course's training split only. VADER (the rule-based analyser whose paper produced the Amazon ratings) needs no
training; its lexicon ships inside the `vadersentiment` package, so it runs offline.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from helpers.config import CourseConfig
from helpers.evaluate import classification_metrics, fine_tuned_margin

VADER_THRESHOLD = 0.05  # VADER's documented cut-offs: compound >= 0.05 positive, <= -0.05 negative
VADER_LABELS = ("negative", "neutral", "positive")  # all VADER can say


def vader_fits(labels) -> bool:
    """Whether VADER's three answers can be scored against `labels` (the course's three, or two of them)."""
    return set(labels) <= set(VADER_LABELS)


def _timed(fit, predict, n):
    start = time.perf_counter()
    model = fit()
    fitted = time.perf_counter()
    predictions, probabilities = predict(model)
    done = time.perf_counter()
    return {"predictions": list(predictions), "probabilities": probabilities, "fit_seconds": fitted - start,
            "reviews_per_second": n / max(done - fitted, 1e-9)}


def _labelled(test: pd.DataFrame, labels):
    """predict(model) for `_timed`: the fitted model's probabilities on `test` and the argmax labels."""
    def predict(model):
        probs = model(test["text"])
        return [labels[i] for i in probs.argmax(1)], probs
    return predict


def fit_majority_class(train: pd.DataFrame, labels):
    """Always the most frequent training label (ties: the first in label order). Returns `predict(texts)` ->
    probabilities (all mass on that label)."""
    counts = train["label"].value_counts()
    label = max(labels, key=lambda lab: (counts.get(lab, 0), -list(labels).index(lab)))
    row = np.eye(len(labels))[list(labels).index(label)]
    return lambda texts: np.tile(row, (len(texts), 1))


def majority_class(train: pd.DataFrame, test: pd.DataFrame, labels) -> dict:
    """The majority class on `test`, timed like the other baselines."""
    return _timed(lambda: fit_majority_class(train, labels), _labelled(test, labels), len(test))


def fit_tfidf_logreg(train: pd.DataFrame, labels, seed: int = 0):
    """TF-IDF on word 1-2 grams + logistic regression, fitted on `train` only. Returns `predict(texts)` ->
    probabilities in `labels` order (0 for a label the training rows lack)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                             LogisticRegression(max_iter=2000, C=4.0, random_state=seed))
    pipeline.fit(list(train["text"]), list(train["label"]))
    classes = list(pipeline.classes_)

    def predict(texts):
        raw = pipeline.predict_proba(list(texts))
        probs = np.zeros((len(raw), len(labels)))
        for j, lab in enumerate(labels):
            if lab in classes:
                probs[:, j] = raw[:, classes.index(lab)]
        return probs
    return predict


def tfidf_logreg(train: pd.DataFrame, test: pd.DataFrame, labels, seed: int = 0) -> dict:
    """TF-IDF + logistic regression fitted on `train`, predicting `test`."""
    return _timed(lambda: fit_tfidf_logreg(train, labels, seed), _labelled(test, labels), len(test))


def vader_label(compound: float, threshold: float = VADER_THRESHOLD) -> str:
    if compound >= threshold:
        return "positive"
    if compound <= -threshold:
        return "negative"
    return "neutral"


def vader_predict(texts, threshold: float = VADER_THRESHOLD) -> list[str]:
    """VADER's labels for `texts`: its compound score with the documented thresholds (no training, no probabilities)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return [vader_label(analyzer.polarity_scores(t)["compound"], threshold) for t in texts]


def vader(test: pd.DataFrame, threshold: float = VADER_THRESHOLD) -> dict:
    """VADER on `test`, timed like the other baselines."""
    return _timed(lambda: None, lambda _: (vader_predict(test["text"], threshold), None), len(test))


def run_baselines(cfg: CourseConfig, train: pd.DataFrame, test: pd.DataFrame) -> list[dict]:
    """The three baselines on the same test reviews, scored like every other method in the course (VADER only where
    its negative/neutral/positive answers fit the labels)."""
    runs = {BASELINES[0]: majority_class(train, test, cfg.labels), BASELINES[2]: tfidf_logreg(train, test, cfg.labels,
                                                                                               cfg.seed)}
    if vader_fits(cfg.labels):
        runs = {BASELINES[0]: runs[BASELINES[0]], BASELINES[1]: vader(test), BASELINES[2]: runs[BASELINES[2]]}
    return [{"method": name, **run, **classification_metrics(test["label"], run["predictions"], cfg.labels),
             "cost_per_1000_usd": 0.0, "median_latency_s": None} for name, run in runs.items()]


BASELINES = ("majority class", "VADER (rules, no training)", "TF-IDF + logistic regression")


def baseline_verdict(rows: list[dict], gold, cfg: CourseConfig) -> str:
    """One sentence: does the best fine-tuned method beat, tie or fall behind the best classic baseline on the test
    reviews (`gold`), by the paired bootstrap?"""
    return fine_tuned_margin(gold, rows, [r for r in rows if r["method"] in BASELINES], "classic baseline", cfg.labels,
                             cfg.seed)
