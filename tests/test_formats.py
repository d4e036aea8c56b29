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
    from helpers.formats import engine_features, format_verdict

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
    engines = {"llama.cpp": "AVX2 AVX512 AVX512_VNNI", "PyTorch": "AVX512"}
    assert tied.endswith(f"Q4_K_M is the faster engine on this CPU: llama.cpp multiplies its 4-bit weights as 8-bit "
                         f"integers with {engine_features()['llama.cpp']}, one review per decode "
                         f"(the instructions `make setup` built it for on this CPU; PyTorch picks its kernels, "
                         f"{engine_features()['PyTorch']}, when it runs).")
    slower = format_verdict([hf, {**q4, "reviews_per_second": 5.0}], gold, cfg, engines)
    assert "HF fp32 is the faster engine on this CPU: PyTorch's AVX512 fp32 products outrun llama.cpp's, which unpack " \
           "the 4-bit weights into 8-bit integers with AVX2 AVX512 AVX512_VNNI, " in slower
    apart = format_verdict([{**hf, "scored_in": "02_logged_training"}, {**q4, "scored_in": "here"}], gold, cfg, engines)
    assert "as many reviews per second as HF fp32 (as timed in 02_logged_training) and changed 1 of 60" in apart
    assert "HF fp32 was timed in 02_logged_training, not beside the GGUF files" in apart
    assert "faster engine" not in apart and "`make bench PARTS=gguf` times them side by side" in apart


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


# --- the worked solutions of notebook 03's exercises --------------------------------------------------------------

def _row(fmt, size_mb, rps, predictions, labels, probabilities=None):
    from helpers.evaluate import classification_metrics

    gold = list(np.array(labels)[np.arange(len(predictions)) % 3])
    return {"format": fmt, "size_mb": size_mb, "reviews_per_second": rps, "predictions": predictions,
            "probabilities": probabilities, **classification_metrics(gold, predictions, labels)}


def test_placement_sentence_puts_q5_between_on_size_and_speed_and_lets_the_bootstrap_judge_macro_f1(cfg):
    from helpers.formats import placement_sentence

    gold = list(np.array(cfg.labels)[np.arange(60) % 3])
    wrong = [cfg.labels[(cfg.labels.index(g) + 1) % 3] for g in gold]
    rows = [_row("GGUF Q8_0", 144.8, 8.0, gold, cfg.labels), _row("GGUF Q5_K_M", 120.0, 7.5, gold, cfg.labels),
            _row("GGUF Q4_K_M", 105.5, 6.4, ["neutral"] + gold[1:], cfg.labels)]
    said = placement_sentence(rows, gold, cfg)
    assert said.startswith("Q5_K_M weighs 120 MB, between Q4_K_M (105.5) and Q8_0 (144.8); it classifies 7.5 "
                           "reviews per second, between Q4_K_M (6.4) and Q8_0 (8.0); on macro-F1 (1.000) it is tied "
                           "with Q8_0 (+0.000, 95 % interval +0.000 to +0.000) and is tied with Q4_K_M (+0.017")
    assert said.endswith(": the test set cannot tell the three apart.")
    rows[2] = _row("GGUF Q4_K_M", 130.0, 9.0, wrong, cfg.labels)  # larger, faster and always wrong
    said = placement_sentence(rows, gold, cfg)
    assert "MB, smaller than both Q4_K_M (130) and Q8_0 (144.8)" in said
    assert "reviews per second, slower than both Q4_K_M (9.0) and Q8_0 (8.0)" in said
    assert "and scores above Q4_K_M (+1.000, 95 % interval +1.000 to +1.000)." in said
    assert "cannot tell" not in said


def _answers_rows():
    labels = ["negative", "neutral", "positive"]
    hf = _row("HF fp32", 500.0, 10.0, ["negative", "neutral", "positive", "positive"], labels,
              [[0.9, 0.05, 0.05], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8], [0.05, 0.45, 0.5]])
    q4 = _row("GGUF Q4_K_M", 100.0, 20.0, ["negative", "negative", "positive", "neutral"], labels,
              [[0.88, 0.07, 0.05], [0.42, 0.38, 0.2], [0.1, 0.15, 0.75], [0.05, 0.5, 0.45]])
    return ["awful", "a box", "lovely", "fine, I guess"], ["negative", "neutral", "positive", "neutral"], hf, q4


def test_changed_answers_lists_both_probabilities_and_the_hf_margin_closest_calls_first():
    from helpers.formats import changed_answers

    texts, gold, hf, q4 = _answers_rows()
    table = changed_answers(texts, gold, hf, q4)
    assert list(table.columns) == ["text", "gold", "HF fp32", "GGUF Q4_K_M", "HF fp32 p", "GGUF Q4_K_M p", "margin",
                                   "changed"]
    assert list(table["text"]) == ["fine, I guess", "a box", "lovely", "awful"]  # margins 0.05, 0.1, 0.7, 0.85
    assert np.allclose(table["margin"], [0.05, 0.1, 0.7, 0.85])
    assert list(table["changed"]) == [True, True, False, False]
    assert table.iloc[1]["GGUF Q4_K_M p"] == (0.42, 0.38, 0.2) and table.iloc[1]["gold"] == "neutral"


def test_close_calls_figures_and_sentence_on_a_tiny_table():
    from helpers.formats import changed_answers, close_calls, close_calls_sentence

    texts, gold, hf, q4 = _answers_rows()
    figures = close_calls(changed_answers(texts, gold, hf, q4), closest_share=0.5)
    assert figures == {"reviews": 4, "changed": 2, "median_margin_changed": pytest.approx(0.075),
                       "median_margin_unchanged": pytest.approx(0.775), "unchanged_wider_than_changed_median": 1.0,
                       "closest": 2, "changed_among_closest": 2}
    said = close_calls_sentence(figures, "HF fp32", "Q4_K_M")
    assert said == ("2 of 4 reviews changed their answer between HF fp32 and Q4_K_M. Yes: they were close calls "
                    "already — HF fp32's median margin (top probability minus the second) was 0.075 on them against "
                    "0.775 on the unchanged reviews, narrower than on 100% of those; 2 of the 2 closest calls changed "
                    "(100%), against 50% of all reviews.")


def test_close_calls_sentence_says_partly_no_and_when_nothing_changed():
    from helpers.formats import close_calls_sentence

    base = {"reviews": 40, "changed": 4, "median_margin_changed": 0.3, "median_margin_unchanged": 0.35,
            "closest": 4, "changed_among_closest": 1}
    assert "Partly: they were closer calls than most" in close_calls_sentence(
        {**base, "unchanged_wider_than_changed_median": 0.6})
    no = close_calls_sentence({**base, "unchanged_wider_than_changed_median": 0.4})
    assert "No: they were not especially close calls" in no and "1 of the 4 closest calls changed (25%), " \
        "against 10% of all reviews." in no
    none = close_calls_sentence({"reviews": 24, "changed": 0, "median_margin_changed": None,
                                 "median_margin_unchanged": 0.2, "unchanged_wider_than_changed_median": None,
                                 "closest": 3, "changed_among_closest": 0})
    assert none.startswith("No review changed its answer between HF fp32 and Q4_K_M (24 reviews)")


@pytest.mark.slow
def test_quantize_beside_writes_q5_k_m_with_the_chapters_decision_rule_and_rows_keep_probabilities(tiny_gguf, cfg):
    import shutil

    import pandas as pd

    from helpers.formats import compare_formats, quantize_beside
    from helpers.runs import layout, read_decision, write_decision

    _, source, f16, _ = tiny_gguf
    run = layout(cfg)
    run.gguf("f16").parent.mkdir(parents=True)
    shutil.copy(f16, run.gguf("f16"))
    rule = {"rule": "offsets", "offsets": [0.0, 0.5, 0.0], "labels": list(cfg.labels), "eval": None, "sentence": ""}
    write_decision(rule, run.gguf("Q4_K_M"))  # beside the chapter's files
    q5 = quantize_beside(cfg, "Q5_K_M", cfg.run_dir / "solution")
    assert q5 == cfg.run_dir / "solution" / "model-Q5_K_M.gguf" and read_decision(q5)["offsets"] == [0.0, 0.5, 0.0]
    assert q5.stat().st_size < f16.stat().st_size
    df = pd.DataFrame({"text": ["great", "bad", "a box"], "label": ["positive", "negative", "neutral"]})
    known = {"labels": list(df["label"]), "predictions": ["negative"] * 3, "reviews_per_second": 123.0,
             "measured_in": "02_logged_training", "probabilities": [[0.5, 0.3, 0.2]] * 3}
    hf, row = compare_formats(cfg, source, {"GGUF Q5_K_M": q5}, df, progress=False, known=known,
                              with_probabilities=True)
    assert hf["probabilities"] == known["probabilities"] and hf["scored_in"] == "02_logged_training"
    probs = np.array(row["probabilities"])
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1)
    assert row["predictions"] == [cfg.labels[i] for i in probs.argmax(1)]
    assert "probabilities" not in compare_formats(cfg, source, {}, df, progress=False, known=known)[0]
