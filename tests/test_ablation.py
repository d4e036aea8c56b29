import numpy as np
import pytest

import helpers.ablation
from helpers.ablation import (ablation_summary, ablation_verdict, curve_sentence, run_masking_ablation, run_stop_ablation,
                              stop_sentence, verdict_holds)
from helpers.data import prepare_splits


@pytest.mark.slow
def test_ablation_returns_both_arms_on_a_tiny_run(cfg):
    """Both arms train `ablation_steps` steps (a derived setting, not a keyword override) and are scored."""
    cfg.ablation_steps, cfg.ablation_points = 2, (1, 2)
    splits = prepare_splits(cfg)
    results = run_masking_ablation(cfg, splits, cfg.run_dir / "ablation", progress=False)
    assert set(results) == {"masked", "unmasked"}
    for arm in results.values():
        assert 0 <= arm["accuracy"] <= 1 and 0 <= arm["macro_f1"] <= 1 and arm["steps"] == 2
        assert [step for step, _ in arm["loss_history"]] == [1, 2]
        assert [step for step, _ in arm["eval_curve"]] == [1, 2] and arm["eval_seconds"] > 0
        assert all(len(p) == len(splits.eval) for p in arm["eval_predictions"].values())
    assert (cfg.run_dir / "ablation" / "train_log_unmasked.jsonl").read_text().count('"loss"') == 2
    summary = ablation_summary(results)
    assert set(summary["masked"]) == {"accuracy", "macro_f1", "n", "steps", "train_seconds", "loss_history",
                                      "predictions", "eval_curve", "eval_seconds"}
    assert summary["unmasked"]["accuracy"] == results["unmasked"]["accuracy"]


@pytest.mark.slow
def test_both_arms_train_padding_free_with_their_own_lora_setting_when_the_knobs_say_so(cfg, monkeypatch):
    seen, real = [], helpers.ablation.train_fresh
    monkeypatch.setattr(helpers.ablation, "train_fresh",
                        lambda arm_cfg, *a, **k: seen.append(arm_cfg) or real(arm_cfg, *a, **k))
    cfg.ablation_steps, cfg.ablation_padding_free = 1, True
    cfg.ablation_lora_layers, cfg.ablation_learning_rate = 0, 2e-4  # smoke trains the top block of two elsewhere
    run_masking_ablation(cfg, prepare_splits(cfg), cfg.run_dir / "ablation", progress=False)
    assert [(c.padding_free, c.max_steps, c.lora_layers, c.learning_rate, c.batch_size) for c in seen] == [
        (True, 1, 0, 2e-4, cfg.ablation_batch_size)] * 2
    assert (cfg.padding_free, cfg.lora_layers, cfg.learning_rate) == (False, 1, 3e-4)
    seen.clear()
    cfg.ablation_padding_free = False
    run_masking_ablation(cfg, prepare_splits(cfg), cfg.run_dir / "ablation", progress=False)
    assert [c.padding_free for c in seen] == [False, False]


def test_ablation_verdict_follows_the_paired_bootstrap(cfg):
    gold = list(np.array(cfg.labels)[np.arange(60) % 3])
    almost, wrong = ["neutral"] + gold[1:], [cfg.labels[(cfg.labels.index(g) + 1) % 3] for g in gold]
    arm = {"accuracy": 1.0, "macro_f1": 1.0, "steps": 20, "n": 60, "predictions": gold}
    tied = ablation_verdict({"masked": {**arm, "accuracy": 59 / 60, "macro_f1": 0.983, "predictions": almost},
                             "unmasked": arm}, gold, cfg)
    assert ": a tie: the test set cannot tell the two apart (-0.017, 95 % interval " in tied and "helped" not in tied
    helped = ablation_verdict({"masked": arm, "unmasked": {**arm, "macro_f1": 0.0, "predictions": wrong}}, gold, cfg)
    assert "masking helped (+1.000, 95 % interval +1.000 to +1.000 macro-F1) on 60 test reviews." in helped
    hurt = ablation_verdict({"masked": {**arm, "predictions": wrong}, "unmasked": arm}, gold, cfg)
    assert "masking hurt (-1.000" in hurt


def outcome(name, difference, low, high):
    """The part of a `verdict` that `verdict_holds` reads."""
    return {"outcome": name, "interval": f"{difference:+.3f}, 95 % interval {low:+.3f} to {high:+.3f}"}


def test_the_verdict_holds_only_when_every_setting_says_the_same():
    same = verdict_holds({"20 steps": outcome("ahead", 0.2, 0.1, 0.3), "60 steps": outcome("ahead", 0.1, 0.02, 0.2)})
    assert same.startswith("20 steps: masking helped (+0.200, 95 % interval +0.100 to +0.300); 60 steps: masking")
    assert same.endswith("The verdict holds in every setting tried.")
    moved = verdict_holds({"20 steps": outcome("ahead", 0.2, 0.1, 0.3), "seed 43": outcome("tied", 0.0, -0.1, 0.1)})
    assert "seed 43: a tie (+0.000" in moved and "The verdict does not hold" in moved


def test_stop_sentence_calls_a_drop_in_stops_only_outside_the_noise():
    def arm(stops, tokens):
        return {"stops": stops, "stopped": float(np.mean(stops)), "mean_new_tokens": tokens, "max_new_tokens": 8}
    never = stop_sentence({"answer": arm([True] * 40, 3.0), "label only": arm([False] * 40, 8.0)})
    assert "ended 0% of its test answers" in never and "answer 100% (-100%, 95 % interval -100% to -100%)" in never
    assert "does not learn to stop" in never and "8.0 tokens per answer against 3.0" in never
    same = stop_sentence({"answer": arm([True, False] * 20, 5.0), "label only": arm([False, True] * 20, 5.0)})
    assert "A tie" in same


@pytest.mark.slow
def test_the_label_only_arm_trains_the_label_alone_and_both_arms_are_read_for_their_stops(cfg):
    cfg.ablation_steps = 2
    results = run_stop_ablation(cfg, prepare_splits(cfg), cfg.run_dir / "stops", max_new_tokens=4, progress=False)
    assert list(results) == ["answer (label + end-of-turn)", "label only"]
    for arm in results.values():
        assert len(arm["stops"]) == len(arm["answers"]) == cfg.test_size and 0 <= arm["stopped"] <= 1
        assert 1 <= arm["mean_new_tokens"] <= 4 and 0 <= arm["macro_f1"] <= 1


def test_the_curve_sentence_reads_each_eval_point_with_the_bootstrap(cfg):
    gold = list(np.array(cfg.labels)[np.arange(60) % 3])
    wrong = [cfg.labels[(cfg.labels.index(g) + 1) % 3] for g in gold]

    def arms(masked, unmasked):
        return {"masked": {"eval_curve": [(s, 1.0 if p is gold else 0.0) for s, p in masked.items()],
                           "eval_predictions": masked},
                "unmasked": {"eval_curve": [(s, 1.0 if p is gold else 0.0) for s, p in unmasked.items()],
                             "eval_predictions": unmasked}}
    faster = curve_sentence(arms({10: gold, 20: gold}, {10: wrong, 20: gold}), gold, cfg)
    assert faster.startswith("Eval macro-F1 along training, masked vs unmasked on 60 eval reviews: step 10 1.000 vs "
                             "0.000 (ahead, +1.000); step 20 1.000 vs 1.000 (tied, +0.000).")
    assert faster.endswith("masking learned faster; by the last point the unmasked arm had caught up within the "
                           "eval split's noise.")
    assert curve_sentence(arms({10: gold, 20: gold}, {10: wrong, 20: wrong}), gold, cfg).endswith(
        "masking learned faster and was still ahead at the last point.")
    assert curve_sentence(arms({10: wrong, 20: gold}, {10: wrong, 20: wrong}), gold, cfg).endswith(
        "masking pulled ahead only at the last point.")
    assert curve_sentence(arms({10: wrong}, {10: gold}), gold, cfg).endswith(
        "the unmasked arm was ahead at step 10.")
    assert curve_sentence(arms({10: gold}, {10: gold}), gold, cfg).endswith("cannot tell the two arms apart at any point.")
