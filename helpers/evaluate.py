"""The metrics every notebook reports, from gold labels and predictions: accuracy, macro-F1, per-class scores,
confusion, calibration, the mistakes worth reading, and the parser that turns a generated answer into a label.
It runs no model (that is `helpers.predict`)."""
from __future__ import annotations

import re

import numpy as np


INVALID = "invalid"


def normalise_rows(log_scores) -> np.ndarray:
    """Softmax over each row: log-probabilities (or logits) of the labels -> probabilities that sum to 1."""
    scores = np.asarray(log_scores, dtype=float)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def parse_label(answer: str, labels) -> str:
    """Map a generated answer to a label: 'Positive.', ' negative\n', 'NEUTRAL', '5 stars' -> the label. The answer
    must start with the label's words (the longest label that fits wins, so 'very positive' beats 'positive'); an
    answer that goes on to name another label ('positive or negative') or starts otherwise ('not positive') is
    `invalid` rather than guessed."""
    words = _words(answer)
    spelled = {label: _words(label) for label in labels}
    starts = [label for label, w in spelled.items() if w and words[:len(w)] == w]
    if not starts:
        return INVALID
    best = max(starts, key=lambda label: len(spelled[label]))
    rest = words[len(spelled[best]):]
    named = any(rest[i:i + len(w)] == w for label, w in spelled.items() if label != best and w
                for i in range(len(rest)))
    return INVALID if named else best


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def classification_metrics(gold, predicted, labels) -> dict:
    """Accuracy, macro-F1 over the labels (an `invalid` answer counts as wrong), per-class precision/recall,
    the invalid rate and a confusion matrix (rows: gold labels; columns: labels then `invalid`)."""
    gold, predicted = list(gold), list(predicted)
    if len(gold) != len(predicted) or not gold:
        raise ValueError(f"Need as many predictions as gold labels, and at least one ({len(predicted)} vs {len(gold)}).")
    labels = list(labels)
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    return {
        "n": len(gold),
        "accuracy": float(np.mean([g == p for g, p in zip(gold, predicted)])),
        "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        "invalid_rate": float(np.mean([p not in labels for p in predicted])),
        "per_class": {lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                            "support": int(support[i])} for i, lab in enumerate(labels)},
        "confusion": {"labels": labels + [INVALID],
                      "matrix": confusion_matrix(gold, predicted, labels=labels + [INVALID])[:len(labels)].tolist()},
    }


def metrics_summary(metrics: dict) -> dict:
    """The scores of a `Predictor.evaluate` result without its per-review lists, for a metrics file."""
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "invalid_rate", "reviews_per_second", "per_class",
                                    "confusion")}


def expected_calibration_error(probabilities, gold, labels, bins: int = 10) -> dict:
    """How far confidence (the top probability) is from accuracy, over equal-width confidence bins.

    Returns {"ece": float, "bins": [{"confidence", "accuracy", "count"}, ...]} (empty bins left out)."""
    probs = np.asarray(probabilities, dtype=float)
    confidence = probs.max(1)
    correct = np.array([labels[i] == g for i, g in zip(probs.argmax(1), gold)], dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            conf, acc = confidence[inside].mean(), correct[inside].mean()
            ece += inside.mean() * abs(acc - conf)
            rows.append({"confidence": float(conf), "accuracy": float(acc), "count": int(inside.sum())})
    return {"ece": float(ece), "bins": rows}


def most_confident_mistakes(test_df, predictions, probabilities, labels, limit: int = 10):
    """The test reviews the model got wrong, most confident first: text, gold, predicted, its probability, rating."""
    import pandas as pd

    probs = np.asarray(probabilities, dtype=float)
    frame = pd.DataFrame({"text": list(test_df["text"]), "gold": list(test_df["label"]), "predicted": list(predictions),
                          "probability": probs.max(1),
                          "rating": list(test_df["rating"]) if "rating" in test_df else np.nan})
    wrong = frame[frame["gold"] != frame["predicted"]]
    return wrong.sort_values("probability", ascending=False, kind="stable").head(limit).reset_index(drop=True)


def mistakes_near_threshold(test_df, predictions, threshold: float, margin: float = 0.5) -> dict:
    """For graded data: how many mistakes have a mean rating within `margin` of the ±threshold label boundary."""
    ratings = np.asarray(test_df["rating"], dtype=float)
    wrong = np.array([g != p for g, p in zip(test_df["label"], predictions)])
    near = np.abs(np.abs(ratings) - threshold) <= margin
    graded = np.isfinite(ratings)
    return {"mistakes": int(wrong.sum()), "graded_mistakes": int((wrong & graded).sum()),
            "near_threshold": int((wrong & graded & near).sum()),
            "share_of_test_near_threshold": float((near & graded).mean()) if graded.any() else None}


# --- calling a winner: the one way every chapter, the report and the model cards say "beats", "tied" or "behind" ---

def paired_bootstrap(gold, a, b, labels, draws: int = 1000, seed: int = 0) -> dict:
    """macro-F1 of predictions `a` minus `b` on the same items, with a 95 % interval from resampling the items.
    An interval that contains 0 means the test set cannot tell the two apart."""
    gold, a, b = (np.asarray(list(x)) for x in (gold, a, b))
    if not len(gold) == len(a) == len(b):
        raise ValueError(f"A paired comparison needs one prediction of each side per gold label ({len(gold)} gold, "
                         f"{len(a)} and {len(b)} predictions): score both on the same test rows.")
    idx = resampled_items(len(gold), draws, seed)
    diffs = macro_f1_rows(gold[idx], a[idx], labels) - macro_f1_rows(gold[idx], b[idx], labels)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": float(macro_f1_rows(gold[None], a[None], labels)[0] - macro_f1_rows(gold[None], b[None], labels)[0]),
            "low": float(low), "high": float(high)}


def resampled_items(n: int, draws: int = 1000, seed: int = 0) -> np.ndarray:
    """(draws, n) indices of the items drawn with replacement: the bootstrap's draws, the same for the same seed."""
    return np.random.default_rng(seed).integers(n, size=(draws, n))


def paired_mean_difference(a, b, draws: int = 1000, seed: int = 0) -> dict:
    """The mean of per-item scores `a` minus `b` (e.g. 1.0 where an answer stopped) on the same items, with a 95 %
    interval from resampling the items, as `paired_bootstrap` does for macro-F1."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    idx = resampled_items(len(a), draws, seed)
    low, high = np.percentile(a[idx].mean(1) - b[idx].mean(1), [2.5, 97.5])
    return {"difference": float(a.mean() - b.mean()), "low": float(low), "high": float(high)}


def macro_f1_rows(gold: np.ndarray, predicted: np.ndarray, labels) -> np.ndarray:
    """Row-wise macro-F1 of (draws, n) label arrays (as sklearn's, zero_division=0)."""
    f1 = []
    for label in labels:
        tp = ((gold == label) & (predicted == label)).sum(1)
        fp = ((gold != label) & (predicted == label)).sum(1)
        fn = ((gold == label) & (predicted != label)).sum(1)
        f1.append(np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0))
    return np.mean(f1, axis=0)


def verdict(gold, first: dict, second: dict, labels, seed: int = 0, where: str = "the test set") -> dict:
    """Does `first` beat `second`? Both are rows with a "method" name, their "macro_f1" and their "predictions" on the
    items of `gold`.
    A paired bootstrap of the macro-F1 difference decides: a 95 % interval that contains 0 is a tie.

    Returns the bootstrap's difference, low and high, `outcome` ("ahead", "tied" or "behind": `first` against
    `second`), `winner` (a method name, None on a tie), `interval` ("+d, 95 % interval +l to +h", for a chapter's own
    sentence) and `sentence` (the leader first; `where` names the items)."""
    test = paired_bootstrap(gold, first["predictions"], second["predictions"], labels, seed=seed)
    tie = test["low"] <= 0 <= test["high"]
    outcome = "tied" if tie else "ahead" if test["difference"] > 0 else "behind"
    interval = f"{test['difference']:+.3f}, 95 % interval {test['low']:+.3f} to {test['high']:+.3f}"
    if tie:
        sentence = (f"{first['method']} ({first['macro_f1']:.3f} macro-F1) and {second['method']} "
                    f"({second['macro_f1']:.3f}) are tied within {where}'s noise ({interval}).")
    else:
        lead, trail = (first, second) if outcome == "ahead" else (second, first)
        low, high = (test["low"], test["high"]) if outcome == "ahead" else (-test["high"], -test["low"])
        sentence = (f"{lead['method']} ({lead['macro_f1']:.3f} macro-F1) beats {trail['method']} "
                    f"({trail['macro_f1']:.3f}) by {abs(test['difference']):.3f} (95 % interval {low:+.3f} to "
                    f"{high:+.3f}).")
    return {**test, "tie": bool(tie), "outcome": outcome, "interval": interval, "sentence": sentence,
            "winner": None if tie else (first if outcome == "ahead" else second)["method"]}


def fine_tuned_margin(gold, rows: list[dict], rivals: list[dict], rival_kind: str, labels, seed: int = 0) -> str:
    """One sentence: does the best fine-tuned row beat, tie or fall behind the best of `rivals` (e.g. "few-shot
    prompt") on the items of `gold`, by the paired bootstrap? Rows without predictions are left out."""
    tuned = [r for r in rows if r["method"].startswith("fine-tuned") and r.get("predictions") is not None]
    rivals = [r for r in rivals if r.get("predictions") is not None]
    if not rivals or not tuned:
        return f"Nothing to compare: the table needs a {rival_kind} row and a fine-tuned row, with their predictions."
    best_rival, best_tuned = (max(group, key=lambda r: r["macro_f1"]) for group in (rivals, tuned))
    v = verdict(gold, best_tuned, best_rival, labels, seed)
    said = {"ahead": "beat", "tied": "tied with", "behind": "fell behind"}[v["outcome"]]
    return (f"The best fine-tuned model ({best_tuned['method']}, macro-F1 {best_tuned['macro_f1']:.3f}) {said} the best "
            f"{rival_kind} ({best_rival['method']}, {best_rival['macro_f1']:.3f}): {v['interval']}"
            f"{' (a tie: the test set cannot tell them apart)' if v['tie'] else ''}.")


# --- a rare class: per-class decision offsets, chosen on the eval split -------------------------------------------

def apply_offsets(probabilities, offsets) -> np.ndarray:
    """Label probabilities with a per-class log-offset added (a prior correction), renormalised: p_k ∝ p_k · e^b_k.
    `offsets` None leaves them as they are."""
    probs = np.asarray(probabilities, dtype=float)
    if offsets is None:
        return probs
    return normalise_rows(np.log(np.clip(probs, 1e-12, 1.0)) + np.asarray(offsets, dtype=float))


def tune_offsets(probabilities, gold, labels, grid=np.round(np.arange(-3.0, 3.01, 0.25), 2), rounds: int = 3):
    """Per-class log-offsets (the first class's fixed at 0) that maximise macro-F1 of the offset probabilities'
    argmax on (`probabilities`, `gold`), by coordinate ascent over `grid`; of equal scores the smaller offset wins."""
    logp = np.log(np.clip(np.asarray(probabilities, dtype=float), 1e-12, 1.0))
    gold, labels = np.asarray(list(gold)), list(labels)

    def score(b):
        return macro_f1_rows(gold[None], np.asarray(labels)[(logp + b).argmax(1)][None], labels)[0]
    offsets = np.zeros(len(labels))
    for _ in range(rounds):
        for k in range(1, len(labels)):
            trials = [(score(np.where(np.arange(len(labels)) == k, v, offsets)), -abs(v), v) for v in grid]
            offsets[k] = max(trials)[2]
    return offsets


def decision_rule(probabilities, gold, labels, seed: int = 0) -> dict:
    """How to turn label probabilities into a label, chosen on the eval split (`probabilities` of its rows, their
    `gold` labels): per-class offsets (`tune_offsets`) when the paired bootstrap says they beat the plain argmax on
    macro-F1, else the argmax. Returns {"rule", "offsets" (None for the argmax), "labels", "eval": per-class F1 and
    macro-F1 of both, "sentence"}."""
    labels = list(labels)
    offsets = tune_offsets(probabilities, gold, labels)
    rows = {}
    for name, b in (("the most probable label", None), ("per-class offsets", offsets)):
        predictions = [labels[i] for i in apply_offsets(probabilities, b).argmax(1)]
        m = classification_metrics(gold, predictions, labels)
        rows[name] = {"method": name, "macro_f1": m["macro_f1"], "predictions": predictions,
                      "per_class_f1": {lab: s["f1"] for lab, s in m["per_class"].items()}}
    test = verdict(gold, rows["per-class offsets"], rows["the most probable label"], labels, seed, "the eval split")
    chosen = "offsets" if test["outcome"] == "ahead" else "argmax"
    said = (f"per-class offsets {dict(zip(labels, np.round(offsets, 2).tolist()))} on the label log-probabilities"
            if chosen == "offsets" else "the most probable label (per-class offsets did not beat it)")
    return {"rule": chosen, "offsets": offsets.tolist() if chosen == "offsets" else None, "labels": labels,
            "eval": {key: {k: r[k] for k in ("macro_f1", "per_class_f1")} for key, r in zip(("argmax", "offsets"),
                                                                                              rows.values())},
            "sentence": f"Decision rule, chosen on {len(gold)} eval rows: {said}. "
                        f"{test['sentence']}"}


def decision_effect(probabilities, gold, labels, offsets) -> dict:
    """{"most probable label": {label: F1, ..., "macro-F1"}, "decision rule": {...}} from the decision rule's
    `probabilities` (the offsets are taken back out for the first)."""
    labels, rows = list(labels), {}
    back = None if offsets is None else -np.asarray(offsets, dtype=float)
    for name, probs in (("most probable label", apply_offsets(probabilities, back)), ("decision rule", probabilities)):
        m = classification_metrics(gold, [labels[i] for i in np.asarray(probs).argmax(1)], labels)
        rows[name] = {**{lab: s["f1"] for lab, s in m["per_class"].items()}, "macro-F1": m["macro_f1"]}
    return rows
