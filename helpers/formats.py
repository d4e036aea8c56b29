"""Notebook 03's experiment: the same fine-tuned model as HF fp32 and as GGUF files, side by side on the same reviews
— size on disk, load time, reviews per second, accuracy, answers changed — and one sentence on the trade-off.

An experiment: it loads every format through `helpers.predict.load_predictor` and sits above the export mechanism
(`helpers.gguf`) that made the files.
"""
from __future__ import annotations

import time
from pathlib import Path

from helpers.config import CourseConfig
from helpers.evaluate import classification_metrics
from helpers.predict import load_predictor


def compare_formats(cfg: CourseConfig, model_dir: Path, files: dict, test_df, progress: bool = True) -> list[dict]:
    """Size on disk, load time, reviews per second, accuracy and macro-F1 of the HF model and each GGUF file on the
    same reviews by label scoring, and how many answers changed against the HF model."""
    gold, rows = list(test_df["label"]), []
    for name, path in {None: model_dir, **files}.items():
        start = time.perf_counter()
        predictor = load_predictor(cfg, path)
        loaded = time.perf_counter()
        probabilities = predictor.probabilities(test_df["text"], progress=progress)
        seconds = time.perf_counter() - loaded
        predictions = [cfg.labels[i] for i in probabilities.argmax(1)]
        dtype = str(getattr(predictor.model, "dtype", "")).replace("torch.float32", "fp32").replace("torch.", "")
        rows.append({"format": name or f"HF {dtype}", "size_mb": predictor.size_mb, "load_seconds": loaded - start,
                     "reviews_per_second": len(gold) / max(seconds, 1e-9), "predictions": predictions,
                     **_scores(classification_metrics(gold, predictions, cfg.labels))})
        del predictor
    for row in rows:
        row["changed_vs_hf"] = sum(a != b for a, b in zip(row["predictions"], rows[0]["predictions"]))
    return rows


def _scores(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "invalid_rate")}


def format_verdict(rows: list[dict]) -> str:
    """One honest sentence on the trade-off between the HF model and Q4_K_M, whatever the numbers say."""
    hf = rows[0]
    q4 = next(r for r in rows if r["format"] == "GGUF Q4_K_M")
    f16 = next((r for r in rows if r["format"] == "GGUF f16"), hf)
    return (f"Q4_K_M is {q4['size_mb'] / f16['size_mb']:.2f}x the size of f16 ({q4['size_mb']:.0f} vs "
            f"{f16['size_mb']:.0f} MB), classifies {q4['reviews_per_second'] / hf['reviews_per_second']:.1f}x as many "
            f"reviews per second as {hf['format']}, and its accuracy moved by {q4['accuracy'] - hf['accuracy']:+.3f} "
            f"(macro-F1 {q4['macro_f1'] - hf['macro_f1']:+.3f}); {q4['changed_vs_hf']} of {len(q4['predictions'])} "
            f"answers changed.")
