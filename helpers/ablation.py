"""The masking ablation of notebook 01: the same model, records, seed and steps trained twice — answer-only loss and
loss on every token — and scored on the same test reviews, with one sentence that says what the numbers show.

An experiment: it sits above the mechanisms it calls (the masking guard, training, evaluation) and nothing below
imports it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from helpers.config import CourseConfig
from helpers.data import Splits, to_chat_records
from helpers.evaluate import verdict
from helpers.model import free_memory
from helpers.predict import hf_predictor
from helpers.training import train_fresh, train_losses


def run_masking_ablation(cfg: CourseConfig, splits: Splits, out_dir: Path, progress: bool = True) -> dict:
    """Train the same base model on the same records, seed and steps twice — answer-only loss ("masked") and loss
    on every token ("unmasked") — and evaluate both on the same test reviews by label scoring.

    Returns {"masked": {...}, "unmasked": {...}} with accuracy, macro-F1, the loss history and the train time.
    Each arm's log rows land in `out_dir/train_log_<arm>.jsonl` as they are written."""
    records = to_chat_records(splits.train, cfg)
    # the budget, the batches and the LoRA setting of one arm, as settings
    arm_cfg = dataclasses.replace(cfg, max_steps=cfg.ablation_steps, padding_free=cfg.ablation_padding_free,
                                  lora_layers=cfg.ablation_lora_layers, learning_rate=cfg.ablation_learning_rate,
                                  precision=cfg.ablation_precision)
    results = {}
    for arm, masked in (("masked", True), ("unmasked", False)):
        trainer, run = train_fresh(arm_cfg, records, Path(out_dir) / f"trainer_{arm}", progress=progress,
                                   expect="answer" if masked else "all", completion_only_loss=masked,
                                   log_path=Path(out_dir) / f"train_log_{arm}.jsonl")
        merged = trainer.model.merge_and_unload()  # the same predictions as the adapter, and faster to evaluate
        metrics = hf_predictor(merged, trainer.processing_class, cfg).evaluate(splits.test, progress=progress)
        results[arm] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n"],
                        "confusion": metrics["confusion"], "predictions": metrics["predictions"],
                        "train_seconds": run["train_seconds"],
                        "steps": cfg.ablation_steps, "loss_history": train_losses(run["log_history"])}
        del trainer, merged  # one model in memory at a time: the kernel peaked at 4.4 GiB holding the first arm's
        free_memory()        # model and pages while it trained the second; freed, it peaks at the larger arm's
    return results


def ablation_summary(results: dict) -> dict:
    """What the metrics file keeps of each arm (the confusion matrices stay in the notebook; the predictions are kept
    so the verdict can be checked)."""
    return {arm: {k: r[k] for k in ("accuracy", "macro_f1", "n", "steps", "train_seconds", "loss_history",
                                    "predictions")}
            for arm, r in results.items()}


SAID = {"ahead": "masking helped", "behind": "masking hurt", "tied": "a tie: the test set cannot tell the two apart"}


def ablation_verdict(results: dict, gold, cfg: CourseConfig) -> str:
    """One honest sentence on the ablation, whatever the numbers say: the paired bootstrap over the test reviews
    (`gold`) decides whether masking helped, hurt or tied."""
    m, u = results["masked"], results["unmasked"]
    test = verdict(gold, {**m, "method": "masked"}, {**u, "method": "unmasked"}, cfg.labels, cfg.seed)
    return (f"After {m['steps']} steps each, answer-only loss reached accuracy {m['accuracy']:.3f} / macro-F1 "
            f"{m['macro_f1']:.3f}, loss on every token {u['accuracy']:.3f} / {u['macro_f1']:.3f}: {SAID[test['outcome']]} "
            f"({test['interval']} macro-F1) on {len(gold)} test reviews.")
