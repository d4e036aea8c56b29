"""Notebook 03's comparison of the HF model and its GGUF files, through one predictor per format."""


def test_compare_formats_on_the_tiny_model(tiny_gguf):
    import pandas as pd

    from helpers.formats import compare_formats, format_verdict

    cfg, source, f16, q4 = tiny_gguf
    df = pd.DataFrame({"text": ["great", "bad", "a box"], "label": ["positive", "negative", "neutral"]})
    rows = compare_formats(cfg, source, {"GGUF f16": f16, "GGUF Q4_K_M": q4}, df, progress=False)
    assert [r["format"] for r in rows] == ["HF fp32", "GGUF f16", "GGUF Q4_K_M"]
    assert rows[0]["changed_vs_hf"] == 0 and all(len(r["predictions"]) == 3 for r in rows)
    assert rows[2]["size_mb"] < rows[1]["size_mb"] < rows[0]["size_mb"]
    assert rows[1]["predictions"] == rows[0]["predictions"]  # f16 keeps the HF answers on this tiny model
    assert f"{rows[2]['size_mb'] / rows[1]['size_mb']:.2f}x the size of f16" in format_verdict(rows)
