"""Notebook 03's comparison of the HF model and its GGUF files, through one predictor per format."""
import numpy as np
import pytest


@pytest.mark.slow
def test_compare_formats_on_the_tiny_model(tiny_gguf):
    import pandas as pd

    from helpers.formats import compare_formats, format_verdict

    cfg, source, f16, q4 = tiny_gguf
    df = pd.DataFrame({"text": ["great", "bad", "a box"], "label": ["positive", "negative", "neutral"]})
    rows = compare_formats(cfg, source, {"GGUF f16": f16, "GGUF Q4_K_M": q4}, df, progress=False)
    import torch

    hf = "HF bfloat16" if torch.cuda.is_available() else "HF fp32"  # what pick_device chose
    assert [r["format"] for r in rows] == [hf, "GGUF f16", "GGUF Q4_K_M"]
    assert rows[0]["changed_vs_hf"] == 0 and all(len(r["predictions"]) == 3 for r in rows)
    assert rows[2]["size_mb"] < rows[1]["size_mb"] < rows[0]["size_mb"]
    if hf == "HF fp32":
        assert rows[1]["predictions"] == rows[0]["predictions"]  # f16 keeps the fp32 answers on this tiny model
    said = format_verdict(rows, df["label"], cfg)
    assert f"{rows[2]['size_mb'] / rows[1]['size_mb']:.2f}x the size of f16" in said
    assert "on macro-F1 it " in said and "95 % interval" in said


def test_format_verdict_calls_a_small_move_a_tie_and_a_large_one_a_loss(cfg):
    from helpers.formats import format_verdict

    gold = list(np.array(cfg.labels)[np.arange(60) % 3])
    hf = {"format": "HF fp32", "size_mb": 500.0, "reviews_per_second": 10.0, "accuracy": 1.0, "macro_f1": 1.0,
          "predictions": gold, "changed_vs_hf": 0}
    q4 = {**hf, "format": "GGUF Q4_K_M", "size_mb": 100.0, "reviews_per_second": 20.0, "accuracy": 59 / 60,
          "macro_f1": 0.983, "predictions": ["neutral"] + gold[1:], "changed_vs_hf": 1}
    tied = format_verdict([hf, q4], gold, cfg)
    assert "changed 1 of 60 answers; on macro-F1 it is tied with HF fp32 (-0.017, 95 % interval " in tied
    assert "the test set cannot tell them apart" in tied
    wrong = [cfg.labels[(cfg.labels.index(g) + 1) % 3] for g in gold]
    lost = format_verdict([hf, {**q4, "macro_f1": 0.0, "accuracy": 0.0, "predictions": wrong, "changed_vs_hf": 60}],
                          gold, cfg)
    assert "on macro-F1 it falls behind HF fp32 (-1.000, 95 % interval -1.000 to -1.000; accuracy -1.000)." in lost


@pytest.mark.slow
def test_known_hf_scores_are_reused_only_for_the_same_reviews(tiny_gguf):
    import pandas as pd

    from helpers.formats import compare_formats

    cfg, source, f16, _ = tiny_gguf
    df = pd.DataFrame({"text": ["great", "bad", "a box"], "label": ["positive", "negative", "neutral"]})
    known = {"labels": list(df["label"]), "predictions": ["negative", "negative", "negative"],
             "reviews_per_second": 123.0, "measured_in": "02_logged_training"}
    reused = compare_formats(cfg, source, {"GGUF f16": f16}, df, progress=False, known=known)[0]
    assert (reused["predictions"], reused["reviews_per_second"], reused["scored_in"]) == (
        known["predictions"], 123.0, "02_logged_training")
    assert reused["accuracy"] == 1 / 3 and reused["load_seconds"] > 0
    other = compare_formats(cfg, source, {}, df.iloc[::-1], progress=False, known=known)[0]  # other order: re-scored
    assert other["scored_in"] == "here" and other["reviews_per_second"] != 123.0
