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
from helpers.evaluate import classification_metrics, paired_mean_difference, parse_label, verdict
from helpers.masking import label_only_records
from helpers.model import free_memory, load_tokenizer
from helpers.predict import hf_predictor, stopping
from helpers.training import fit_records, scoring_callback, train_fresh, train_losses


def arm_config(cfg: CourseConfig) -> CourseConfig:
    """The budget, the batches and the LoRA setting of one arm of an ablation, as settings."""
    return dataclasses.replace(cfg, max_steps=cfg.ablation_steps, batch_size=cfg.ablation_batch_size,
                               padding_free=cfg.ablation_padding_free, lora_layers=cfg.ablation_lora_layers,
                               learning_rate=cfg.ablation_learning_rate, precision=cfg.ablation_precision)


def run_masking_ablation(cfg: CourseConfig, splits: Splits, out_dir: Path, progress: bool = True) -> dict:
    """Train the same base model on the same records, seed and steps twice — answer-only loss ("masked") and loss
    on every token ("unmasked") — scoring each on the eval split at `cfg.ablation_points` along the way, then both on
    the same test reviews by label scoring.

    Returns {"masked": {...}, "unmasked": {...}} with accuracy, macro-F1, the eval curve, the loss history and the
    train time (without the eval scoring). Each arm's log rows land in `out_dir/train_log_<arm>.jsonl` as they are
    written."""
    records, arm_cfg = to_chat_records(splits.train, cfg), arm_config(cfg)
    results = {}
    for arm, masked in (("masked", True), ("unmasked", False)):
        points = scoring_callback(cfg.ablation_points, lambda model, tokenizer: hf_predictor(
            model, tokenizer, cfg).evaluate(splits.eval, progress=False))
        trainer, run = train_fresh(arm_cfg, records, Path(out_dir) / f"trainer_{arm}", progress=progress,
                                   expect="answer" if masked else "all", completion_only_loss=masked,
                                   log_path=Path(out_dir) / f"train_log_{arm}.jsonl", callbacks=[points])
        merged = trainer.model.merge_and_unload()  # the same predictions as the adapter, and faster to evaluate
        metrics = hf_predictor(merged, trainer.processing_class, cfg).evaluate(splits.test, progress=progress)
        results[arm] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n"],
                        "confusion": metrics["confusion"], "predictions": metrics["predictions"],
                        "train_seconds": run["train_seconds"] - points.seconds, "eval_seconds": points.seconds,
                        "eval_curve": [(step, scored["macro_f1"]) for step, scored in points.scores.items()],
                        "eval_predictions": {step: scored["predictions"] for step, scored in points.scores.items()},
                        "steps": cfg.ablation_steps, "loss_history": train_losses(run["log_history"])}
        del trainer, merged  # one model in memory at a time: the kernel peaked at 4.4 GiB holding the first arm's
        free_memory()        # model and pages while it trained the second; freed, it peaks at the larger arm's
    return results


def ablation_summary(results: dict) -> dict:
    """What the metrics file keeps of each arm (the confusion matrices stay in the notebook; the predictions are kept
    so the verdict can be checked)."""
    return {arm: {k: r[k] for k in ("accuracy", "macro_f1", "n", "steps", "train_seconds", "loss_history",
                                    "predictions", "eval_curve", "eval_seconds")}
            for arm, r in results.items()}


SAID = {"ahead": "masking helped", "behind": "masking hurt", "tied": "a tie: the test set cannot tell the two apart"}


def ablation_verdict(results: dict, gold, cfg: CourseConfig) -> str:
    """One honest sentence on the ablation, whatever the numbers say: the paired bootstrap over the test reviews
    (`gold`) decides whether masking helped, hurt or tied."""
    m, u = results["masked"], results["unmasked"]
    test = ablation_outcome(results, gold, cfg)
    return (f"After {m['steps']} steps each, answer-only loss reached accuracy {m['accuracy']:.3f} / macro-F1 "
            f"{m['macro_f1']:.3f}, loss on every token {u['accuracy']:.3f} / {u['macro_f1']:.3f}: {SAID[test['outcome']]} "
            f"({test['interval']} macro-F1) on {len(gold)} test reviews.")


def curve_sentence(results: dict, eval_gold, cfg: CourseConfig) -> str:
    """What the eval curves show: at each scored step, the masked arm against the unmasked one on the eval split
    (`eval_gold`) by the paired bootstrap, then whether masking learned faster, ended higher, both or neither there.
    (The test split's verdict is `ablation_verdict`'s; the eval split is where the budget was chosen.)"""
    m, u = results["masked"], results["unmasked"]
    outcomes, said = {}, []
    for (step, f1m), (_, f1u) in zip(m["eval_curve"], u["eval_curve"]):
        test = verdict(eval_gold, {"method": "masked", "macro_f1": f1m, "predictions": m["eval_predictions"][step]},
                       {"method": "unmasked", "macro_f1": f1u, "predictions": u["eval_predictions"][step]},
                       cfg.labels, cfg.seed, "the eval split")
        outcomes[step] = test["outcome"]
        said.append(f"step {step} {f1m:.3f} vs {f1u:.3f} ({test['outcome']}, {test['difference']:+.3f})")
    if not outcomes:
        return "No eval points were scored (ablation_points is empty)."
    *early, last = outcomes.values()
    behind = [step for step, o in outcomes.items() if o == "behind"]
    if behind:
        end = f"the unmasked arm was ahead at step {', '.join(map(str, behind))}."
    elif "ahead" in early and last == "ahead":
        end = "masking learned faster and was still ahead at the last point."
    elif "ahead" in early:
        end = "masking learned faster; by the last point the unmasked arm had caught up within the eval split's noise."
    elif last == "ahead":
        end = "masking pulled ahead only at the last point."
    else:
        end = "the eval split cannot tell the two arms apart at any point."
    return (f"Eval macro-F1 along training, masked vs unmasked on {len(eval_gold)} eval reviews: {'; '.join(said)}. "
            f"So on the eval split {end}")


def ablation_outcome(results: dict, gold, cfg: CourseConfig) -> dict:
    """The paired bootstrap's `verdict` of the masked arm against the unmasked one."""
    return verdict(gold, {**results["masked"], "method": "masked"}, {**results["unmasked"], "method": "unmasked"},
                   cfg.labels, cfg.seed)


def verdict_holds(outcomes: dict[str, dict]) -> str:
    """Whether the ablation's verdict holds across settings ({setting: `ablation_outcome`}, the chapter's first)."""
    said = "; ".join(f"{setting}: {SAID[o['outcome']].split(':')[0]} ({o['interval']})"
                     for setting, o in outcomes.items())
    first, *others = outcomes.values()
    same = all(o["outcome"] == first["outcome"] for o in others)
    return (f"{said}. " + ("The verdict holds in every setting tried." if same else
            f"The verdict does not hold: it moves with the setting, so {SAID[first['outcome']].split(':')[0]} is not a "
            f"claim to repeat from one run."))


def run_stop_ablation(cfg: CourseConfig, splits: Splits, out_dir: Path, max_new_tokens: int = 8,
                      progress: bool = True) -> dict:
    """The end-of-turn question of notebook 01's first exercise: the same arm trained twice — on the answer (label
    and end-of-turn, as TRL masks it) and on the label alone (`label_only_records`) — and each arm's greedy answers on
    the test reviews: how often it stops, in how many tokens, and the accuracy of its first label word.
    Returns {arm: {"stopped", "mean_new_tokens", "accuracy", "macro_f1", "answers", "train_seconds"}}."""
    arm_cfg = arm_config(cfg)
    tokenizer = load_tokenizer(cfg)
    answer_records = fit_records(to_chat_records(splits.train, cfg), tokenizer, cfg)
    arms = {"answer (label + end-of-turn)": ("answer", answer_records),
            "label only": ("label", label_only_records(answer_records, tokenizer))}
    results = {}
    for arm, (expect, records) in arms.items():
        trainer, run = train_fresh(arm_cfg, records, Path(out_dir) / f"trainer_{expect}", progress=progress,
                                   expect=expect)
        model = trainer.model.merge_and_unload()
        stops = stopping(model, trainer.processing_class, splits.test["text"], cfg, max_new_tokens, progress)
        words = [parse_label(a, cfg.labels) for a in stops["answers"]]
        metrics = classification_metrics(splits.test["label"], words, cfg.labels)
        results[arm] = {**stops, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                        "train_seconds": run["train_seconds"]}
        del trainer, model
        free_memory()
    return results


def stop_sentence(results: dict, seed: int = 0) -> str:
    """What masking the end-of-turn did at inference, from `run_stop_ablation`'s figures: the difference in the share
    of answers that stop, with a 95 % interval from resampling the test reviews (an interval around 0 is a tie)."""
    (full, a), (label, b) = results.items()
    test = paired_mean_difference(b["stops"], a["stops"], seed=seed)
    low, high = test["low"], test["high"]
    said = (f"Trained on the {label}, the model ended {b['stopped']:.0%} of its test answers with an end-of-turn "
            f"within {b['max_new_tokens']} tokens, trained on the {full} {a['stopped']:.0%} "
            f"({b['stopped'] - a['stopped']:+.0%}, 95 % interval {low:+.0%} to {high:+.0%}), writing "
            f"{b['mean_new_tokens']:.1f} tokens per answer against {a['mean_new_tokens']:.1f}. ")
    if high < 0:
        return said + ("With its end-of-turn masked it does not learn to stop: its answers run on towards the token "
                       "limit, every request pays for those tokens, and a client must cut the label out itself.")
    if low > 0:
        return said + "Masking the end-of-turn made it stop more often here, against expectation: look at its answers."
    return said + ("A tie: after this little training the base model's own habit of ending its turn still decides "
                   "when it stops; train longer to see the end-of-turn's loss matter.")
