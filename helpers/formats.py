"""Notebook 03's experiment: the same fine-tuned model as HF fp32 and as GGUF files, side by side on the same reviews
— size on disk, load time, reviews per second, accuracy, answers changed — and one sentence on the trade-off.

An experiment: it loads every format through `helpers.predict.load_predictor` and sits above the export mechanism
(`helpers.gguf`) that made the files.
"""
from __future__ import annotations

import time
from pathlib import Path

from helpers.config import CourseConfig
from helpers.evaluate import classification_metrics, verdict
from helpers.predict import load_predictor
from helpers.runs import TRAINING, layout


def compare_formats(cfg: CourseConfig, model_dir: Path, files: dict, test_df, progress: bool = True,
                    known: dict | None = None) -> list[dict]:
    """Size on disk, load time, reviews per second, accuracy and macro-F1 of the HF model and each GGUF file on the
    same reviews by label scoring, and how many answers changed against the HF model. `known`: the HF model's
    label scoring of these reviews already measured (`scored_in_training`): it is loaded to time the load, not
    scored again."""
    gold, rows = list(test_df["label"]), []
    for name, path in {None: model_dir, **files}.items():
        start = time.perf_counter()
        predictor = load_predictor(cfg, path)
        loaded = time.perf_counter()
        if name is None and known is not None and known["labels"] == gold:
            predictions, rps, measured_in = known["predictions"], known["reviews_per_second"], known["measured_in"]
        else:
            probabilities = predictor.probabilities(test_df["text"], progress=progress)
            predictions = [cfg.labels[i] for i in probabilities.argmax(1)]
            rps, measured_in = len(gold) / max(time.perf_counter() - loaded, 1e-9), "here"
        dtype = str(getattr(predictor.model, "dtype", "")).replace("torch.float32", "fp32").replace("torch.", "")
        rows.append({"format": name or f"HF {dtype}", "size_mb": predictor.size_mb, "load_seconds": loaded - start,
                     "reviews_per_second": rps, "scored_in": measured_in, "predictions": predictions,
                     **_scores(classification_metrics(gold, predictions, cfg.labels))})
        del predictor
    for row in rows:
        row["changed_vs_hf"] = sum(a != b for a, b in zip(row["predictions"], rows[0]["predictions"]))
    return rows


def scored_in_training(cfg: CourseConfig) -> dict | None:
    """Notebook 02's label scoring of the merged model on its test split (labels, predictions, reviews per second),
    or None if 02 has not recorded it in this run folder: notebook 03 need not score the same model again."""
    m = layout(cfg).metrics(TRAINING)
    if not m or "test_predictions" not in m:
        return None
    return {"labels": m["test_labels"], "predictions": m["test_predictions"], "measured_in": TRAINING,
            "reviews_per_second": m["fine_tuned"]["reviews_per_second"]}


def _scores(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "invalid_rate")}


def format_verdict(rows: list[dict], gold, cfg: CourseConfig) -> str:
    """One honest sentence on the trade-off between the HF model and Q4_K_M, whatever the numbers say: size and speed
    as measured, and the paired bootstrap over the test reviews (`gold`) on whether quantising cost any macro-F1."""
    hf = rows[0]
    q4 = next(r for r in rows if r["format"] == "GGUF Q4_K_M")
    f16 = next((r for r in rows if r["format"] == "GGUF f16"), hf)
    test = verdict(gold, {**q4, "method": "Q4_K_M"}, {**hf, "method": hf["format"]}, cfg.labels, cfg.seed)
    said = {"ahead": "scores above", "tied": "is tied with", "behind": "falls behind"}[test["outcome"]]
    return (f"Q4_K_M is {q4['size_mb'] / f16['size_mb']:.2f}x the size of f16 ({q4['size_mb']:.0f} vs "
            f"{f16['size_mb']:.0f} MB), classifies {q4['reviews_per_second'] / hf['reviews_per_second']:.1f}x as many "
            f"reviews per second as {hf['format']} and changed {q4['changed_vs_hf']} of {len(q4['predictions'])} "
            f"answers; on macro-F1 it {said} {hf['format']} ({test['interval']}"
            f"{': the test set cannot tell them apart' if test['tie'] else ''}; accuracy {q4['accuracy'] - hf['accuracy']:+.3f}).")
