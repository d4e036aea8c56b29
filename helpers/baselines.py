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


def _timed(fit, predict, n):
    start = time.perf_counter()
    model = fit()
    fitted = time.perf_counter()
    predictions, probabilities = predict(model)
    done = time.perf_counter()
    return {"predictions": list(predictions), "probabilities": probabilities, "fit_seconds": fitted - start,
            "reviews_per_second": n / max(done - fitted, 1e-9)}


def majority_class(train: pd.DataFrame, test: pd.DataFrame, labels) -> dict:
    """Always the most frequent training label (ties: the first in label order)."""
    def fit():
        counts = train["label"].value_counts()
        return max(labels, key=lambda lab: (counts.get(lab, 0), -list(labels).index(lab)))

    def predict(label):
        probs = np.tile(np.eye(len(labels))[list(labels).index(label)], (len(test), 1))
        return [label] * len(test), probs
    return _timed(fit, predict, len(test))


def tfidf_logreg(train: pd.DataFrame, test: pd.DataFrame, labels, seed: int = 0) -> dict:
    """TF-IDF on word 1-2 grams + logistic regression, fitted on `train` only."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def fit():
        pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                                 LogisticRegression(max_iter=2000, C=4.0, random_state=seed))
        return pipeline.fit(list(train["text"]), list(train["label"]))

    def predict(pipeline):
        classes = list(pipeline.classes_)
        raw = pipeline.predict_proba(list(test["text"]))
        probs = np.zeros((len(test), len(labels)))
        for j, lab in enumerate(labels):
            if lab in classes:
                probs[:, j] = raw[:, classes.index(lab)]
        return [labels[i] for i in probs.argmax(1)], probs
    return _timed(fit, predict, len(test))


def vader_label(compound: float, threshold: float = VADER_THRESHOLD) -> str:
    if compound >= threshold:
        return "positive"
    if compound <= -threshold:
        return "negative"
    return "neutral"


def vader(test: pd.DataFrame, threshold: float = VADER_THRESHOLD) -> dict:
    """VADER's compound score with its documented thresholds; no training, no probabilities."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    def predict(analyzer):
        return [vader_label(analyzer.polarity_scores(t)["compound"], threshold) for t in test["text"]], None
    return _timed(SentimentIntensityAnalyzer, predict, len(test))


def run_baselines(cfg: CourseConfig, train: pd.DataFrame, test: pd.DataFrame) -> list[dict]:
    """The three baselines on the same test reviews, scored like every other method in the course."""
    runs = dict(zip(BASELINES, (majority_class(train, test, cfg.labels), vader(test),
                                tfidf_logreg(train, test, cfg.labels, cfg.seed))))
    return [{"method": name, **run, **classification_metrics(test["label"], run["predictions"], cfg.labels),
             "cost_per_1000_usd": 0.0, "median_latency_s": None} for name, run in runs.items()]


BASELINES = ("majority class", "VADER (rules, no training)", "TF-IDF + logistic regression")


def baseline_verdict(rows: list[dict]) -> str:
    """By how much the best fine-tuned method beats (or does not beat) the best classic baseline, in macro-F1."""
    return fine_tuned_margin(rows, [r for r in rows if r["method"] in BASELINES], "classic baseline")
