import math

import numpy as np
import pytest

from helpers.config import LABELS
from helpers.diagnostics import (batch_sentence, curve_noise, diagnose, learning_rate_sentence, lr_sweep,
                                 sweep_sentence)
from helpers.data import prepare_splits


def history(losses):
    return [{"step": 5 * (i + 1), "loss": loss, "learning_rate": 1e-4} for i, loss in enumerate(losses)] + [
        {"step": 5 * len(losses), "eval_loss": 1.0}, {"step": 5 * len(losses), "train_runtime": 1.0}]


def test_a_healthy_curve_needs_nothing():
    result = diagnose(history([1.6, 1.2, 0.6, 0.35, 0.3, 0.28, 0.3, 0.29]))
    assert result["status"] == "ok" and "nothing to fix" in result["advice"][0]


def test_plateau_names_learning_rate_batch_size_and_labels():
    result = diagnose(history([1.5, 1.1, 0.95, 0.92, 0.9, 0.91, 0.9, 0.9]), conflicting_texts=49, batch_size=4,
                      learning_rate=1e-5)
    assert result["status"] == "plateau"
    text = " ".join(result["advice"])
    assert "Learning rate (now 1e-05)" in text and "Batch size (now 4)" in text and "49 identical texts" in text


def test_divergence_blames_the_learning_rate():
    result = diagnose(history([1.2, 0.9, 0.8, 1.5, 2.4, 3.9, 6.0, 8.0]), learning_rate=3e-3)
    assert result["status"] == "diverging" and "too high (now 0.003)" in result["advice"][0]


def test_a_climb_back_after_a_fall_blames_the_learning_rate_and_a_noisy_low_stretch_does_not():
    result = diagnose(history([2.0, 1.8, 0.4, 0.3, 0.9, 1.2, 1.4, 1.5]), learning_rate=1e-3)
    assert result["status"] == "diverging" and "climbed back to 1.45" in result["advice"][0]
    # notebook 02's workshop curve: it fell from 1.52 to 0.18, with one logged loss of 0.11 in the middle
    noisy = [5.11, 5.23, 1.18, 0.44, 0.47, 0.36, 0.33, 0.22, 0.3, 0.22, 0.26, 0.31, 0.26, 0.31, 0.28, 0.28, 0.24, 0.18,
             0.2, 0.21, 0.26, 0.21, 0.21, 0.15, 0.11, 0.13, 0.38, 0.16, 0.17, 0.22, 0.16, 0.13, 0.22, 0.19, 0.19, 0.19, 0.14]
    assert diagnose(history(noisy), learning_rate=1e-3)["status"] == "ok"


def test_a_curve_that_never_fell_is_a_plateau_even_with_one_low_point():
    # the shape of the workshop's run at learning rate 1e-6 (exercise 1 of notebook 02): 5.15 -> one 3.5 -> 4.87
    result = diagnose(history([5.2, 5.1, 4.9, 3.5, 4.8, 5.0, 4.9, 4.85]), batch_size=8, learning_rate=1e-6)
    assert result["status"] == "plateau" and "Learning rate (now 1e-06)" in result["advice"][1]


def test_nan_names_the_step():
    result = diagnose(history([1.2, 0.9, math.nan, math.nan]))
    assert result["status"] == "nan" and "at step 15" in result["advice"][0]


def test_too_short_to_judge():
    assert diagnose(history([1.0, 0.9]))["status"] == "too short"


@pytest.mark.slow
def test_lr_sweep_gives_a_curve_a_reading_and_an_eval_score_per_rate_at_a_constant_rate(cfg):
    cfg.sweep_learning_rates, cfg.sweep_steps = (1e-4, 1e-3), 4
    splits = prepare_splits(cfg)
    sweep = lr_sweep(cfg, splits, cfg.run_dir)
    assert list(sweep) == [1e-4, 1e-3] and all([s for s, _ in r["curve"]] == [1, 2, 3, 4] for r in sweep.values())
    assert all(r["end_loss"] == pytest.approx(np.mean([loss for _, loss in r["curve"]][-2:])) for r in sweep.values())
    assert all(r["status"] in ("ok", "plateau", "diverging") and len(r["predictions"]) == len(splits.eval)
               and 0 <= r["macro_f1"] <= 1 for r in sweep.values())


def sweep_of(ends: dict, f1: dict, n: int = 8) -> dict:
    """A made-up sweep: each rate's curve falls from 3.0 to its end, and its predictions score its macro-F1."""
    gold = ["negative", "neutral", "positive"] * 10
    def predictions(score):
        right = round(score * len(gold))
        return gold[:right] + ["negative" if g != "negative" else "positive" for g in gold[right:]]
    return gold, {lr: {"curve": [(i + 1, 3.0 + (end - 3.0) * min(1, i / (n // 2))) for i in range(n)],
                       "end_loss": end, "status": "ok" if end <= 0.5 else "plateau", "advice": [],
                       "macro_f1": f1[lr], "predictions": predictions(f1[lr])} for lr, end in ends.items()}


def test_the_sweep_sentence_names_the_best_rate_and_tests_the_advice():
    labels = ("negative", "neutral", "positive")
    gold, stuck_high = sweep_of({1e-4: 0.3, 3e-4: 0.25, 1e-3: 0.2, 3e-3: 0.9}, {1e-4: 0.6, 3e-4: 0.7, 1e-3: 0.9, 3e-3: 0.2})
    words = sweep_sentence(stuck_high, gold, labels, course_rate=1e-3)
    assert "The best eval macro-F1 is the course's own rate, 0.001" in words
    assert "stayed above 0.5 at 0.003; the advised 0.0001 and 0.0003 took it below, so the advice held." in words
    gold, all_fine = sweep_of({1e-4: 0.3, 1e-3: 0.2}, {1e-4: 0.9, 1e-3: 0.5})
    words = sweep_sentence(all_fine, gold, labels, course_rate=1e-3)
    assert "lr 0.0001 (0.900 macro-F1) beats lr 0.001 (0.500)" in words and "was never needed here" in words
    gold, none_help = sweep_of({1e-4: 2.0, 3e-4: 1.5, 1e-3: 0.4}, {1e-4: 0.4, 3e-4: 0.4, 1e-3: 0.8})
    assert "did not help here" in sweep_sentence(none_help, gold, labels, course_rate=1e-3)


@pytest.mark.slow
def test_layer_grid_trains_every_k_and_size_and_scores_the_eval_split(cfg):
    from helpers.diagnostics import layer_grid

    points = layer_grid(cfg, cfg.run_dir)
    assert [(p["layers"], p["rows"]) for p in points] == [(0, 12), (1, 12), (0, 24), (1, 24)]
    assert all(p["eval_rows"] == 12 and 0 <= p["eval_macro_f1"] <= 1 and p["train_seconds"] > 0 for p in points)
    assert points[0]["rows_per_second"] == 12 / points[0]["train_seconds"]  # one epoch: 3 steps of 4 rows


def test_curve_noise_reads_the_second_half_of_the_logged_loss():
    flat = history([2.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    jagged = history([2.0, 1.0, 0.4, 0.6, 0.4, 0.6])
    assert curve_noise(flat) == 0 and curve_noise(jagged) > 0.1
    assert math.isnan(curve_noise(history([1.0, 0.9])))


def test_the_learning_rate_and_batch_sentences_come_from_the_runs_and_the_bootstrap():
    gold = ["negative", "neutral", "positive"] * 20
    wrong = ["positive", "negative", "neutral"] * 20
    chapter = {"macro_f1": 1.0, "predictions": gold, "log_history": history([2.0, 1.0, 0.5, 0.52, 0.5, 0.52])}
    high = {"macro_f1": 0.0, "predictions": wrong, "diagnosis": {"status": "diverging", "advice": ["It rose."]}}
    said = learning_rate_sentence({3e-3: high}, 1e-3, chapter, gold, LABELS, 0)
    assert said.startswith("At 0.003 diagnose says 'diverging' (It rose.), and the model scores 0.000 macro-F1, below")
    small = {**chapter, "log_history": history([2.0, 1.0, 0.4, 0.6, 0.4, 0.6])}
    said = batch_sentence(small, chapter, 4, 8, gold, LABELS, 0)
    assert "at batch 8 (" in said and "noisier" in said and "are tied within the test set's noise" in said
    assert said.endswith("bought no score here.")
    assert batch_sentence({**small, "log_history": history([1.0])}, chapter, 4, 8, gold, LABELS, 0).startswith(
        "Too few logged points")
