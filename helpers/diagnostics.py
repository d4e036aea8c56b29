"""Why is my loss stuck? Read a log history and say, in words, what to check — and a small learning-rate sweep; and
how fast can it be? LoRA on the top K blocks against the number of training rows, on the eval split.

The rules look at the training loss only. They name the usual suspects in order of cost to check: the learning
rate, the batch size, and the labels themselves (identical texts with different labels cap what any model can learn).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from helpers.config import CourseConfig
from helpers.data import Splits, balanced_sample, prepare_splits, short_classes, to_chat_records
from helpers.evaluate import verdict
from helpers.model import free_memory
from helpers.predict import choose_decision_rule, hf_predictor
from helpers.training import train_fresh, train_losses

PLATEAU = 0.5  # answer-only loss above this after the first stretch means the model is not learning the task


def curve_window(points: int) -> int:
    """How many losses at each end of a curve `diagnose` averages: a quarter of them, at least 2."""
    return max(2, points // 4)


def diagnose(log_history: list[dict], conflicting_texts: int = 0, batch_size: int | None = None,
             learning_rate: float | None = None) -> dict:
    """{"status": "ok"|"nan"|"diverging"|"plateau"|"too short", "advice": [sentences]} for a log history."""
    points = train_losses(log_history)
    if len(points) < 4:
        return {"status": "too short", "advice": [f"Only {len(points)} logged losses: train longer or log more often "
                                                  f"(logging_steps) before judging the curve."]}
    losses = np.array([loss for _, loss in points])
    if not np.isfinite(losses).all():
        step = points[int(np.argmax(~np.isfinite(losses)))][0]
        return {"status": "nan", "advice": [
            f"The loss became NaN/inf at step {step}. Lower the learning rate (÷10), check for empty texts, and on a "
            f"GPU prefer bf16 over fp16 (fp16 overflows)."]}
    window = curve_window(len(losses))
    start, end = losses[:window].mean(), losses[-window:].mean()
    lr = f" (now {learning_rate:g})" if learning_rate else ""
    low = losses[window:-window].min() if len(losses) > 2 * window else end
    fix = f"the learning rate is too high{lr}. Try 1e-4, or 3x lower than now, and keep warm-up steps."
    if end > start * 1.1:
        return {"status": "diverging", "advice": [f"The loss rose from {start:.2f} to {end:.2f}: {fix}"]}
    # A climb back gives up more than half of a real fall (at least half the starting loss). A noisy low stretch
    # (0.11 among 0.15-0.2) is no climb back, nor is one low point in a curve that never fell (a rate too low: 1e-6
    # on the workshop went 5.15 -> 3.51 -> 4.87, and is a plateau).
    if start - low >= start / 2 and end - low > (start - low) / 2:
        return {"status": "diverging", "advice": [
            f"The loss fell from {start:.2f} to {low:.2f}, then climbed back to {end:.2f}, giving back more than half "
            f"of what it had gained: {fix}"]}
    if end > PLATEAU:
        advice = [f"The loss fell from {start:.2f} to only {end:.2f} (above {PLATEAU}): the model is not learning the task."]
        advice.append(f"Learning rate{lr}: for LoRA try 1e-4 and 3e-4 (the sweep below shows which moves the loss).")
        bs = f" (now {batch_size})" if batch_size else ""
        advice.append(f"Batch size{bs}: small batches give noisy steps; try 16, or gradient_accumulation_steps.")
        advice.append(f"Label consistency: {conflicting_texts} identical texts carry different labels in the data"
                      + (" — fix or drop them first." if conflicting_texts else " — the labels are not the problem."))
        return {"status": "plateau", "advice": advice}
    return {"status": "ok", "advice": [f"The loss fell from {start:.2f} to {end:.2f}: nothing to fix."]}


def lr_sweep(cfg: CourseConfig, splits: Splits, out_dir: Path, progress: bool = False) -> dict:
    """Train a fresh adapter for `cfg.sweep_steps` steps at a constant rate (no warm-up, no decay: the curves differ
    by their rate alone) for each of `cfg.sweep_learning_rates`, read each curve with `diagnose`, and score each
    adapter on the eval split (never the test split: the sweep chooses). Returns {learning_rate: {"curve": [(step,
    loss)], "status", "end_loss" (the curve's end as `diagnose` averages it), "advice", "macro_f1", "predictions"}}."""
    records = to_chat_records(splits.train, cfg)
    sweep = {}
    for lr in cfg.sweep_learning_rates:
        run = dataclasses.replace(cfg, learning_rate=lr, max_steps=cfg.sweep_steps, logging_steps=1)
        trainer, result = train_fresh(run, records, Path(out_dir) / f"sweep_{lr:g}", progress=progress,
                                      warmup_steps=0, lr_scheduler_type="constant")
        scored = hf_predictor(trainer.model, trainer.processing_class, cfg).evaluate(splits.eval, progress=False)
        reading = diagnose(result["log_history"], batch_size=cfg.batch_size, learning_rate=lr)
        losses = [loss for _, loss in train_losses(result["log_history"])]
        sweep[lr] = {"curve": train_losses(result["log_history"]), "status": reading["status"],
                     "end_loss": float(np.mean(losses[-curve_window(len(losses)):])), "advice": reading["advice"],
                     "macro_f1": scored["macro_f1"], "predictions": scored["predictions"]}
        del trainer, scored  # each run loads its own base model: hand its memory back before the next one loads
        free_memory()
    return sweep


def sweep_sentence(sweep: dict, gold, labels, course_rate: float, seed: int = 0) -> str:
    """What the sweep says, computed: which rate scored best on the eval split, how each curve ended, and whether
    the well-known advice ("if the loss does not fall below ~0.5, try 1e-4 or 3e-4") held here. Differences are
    called by the paired bootstrap over the eval reviews, so a small eval split says "tied" often."""
    def row(lr):
        return {"method": f"lr {lr:g}", "macro_f1": sweep[lr]["macro_f1"], "predictions": sweep[lr]["predictions"]}

    rates = sorted(sweep)
    best = max(rates, key=lambda lr: sweep[lr]["macro_f1"])
    ends = ", ".join(f"{lr:g} {sweep[lr]['end_loss']:.2f} ({sweep[lr]['status']})" for lr in rates)
    words = [f"After {len(sweep[best]['curve'])} steps the loss ended at {ends}."]
    if best != course_rate and course_rate in sweep:
        words.append(verdict(gold, row(best), row(course_rate), labels, seed, "the eval split")["sentence"])
    else:
        words.append(f"The best eval macro-F1 is the course's own rate, {best:g} ({sweep[best]['macro_f1']:.3f}).")
    stuck = [lr for lr in rates if sweep[lr]["end_loss"] > PLATEAU]
    advised = [lr for lr in (1e-4, 3e-4) if lr in sweep]
    if not stuck:
        words.append(f"Every rate took the loss below {PLATEAU}, so the advice to try 1e-4 or 3e-4 when it stays above "
                     f"was never needed here.")
    elif advised:
        fixed = [lr for lr in advised if sweep[lr]["end_loss"] <= PLATEAU]
        words.append(f"The loss stayed above {PLATEAU} at {', '.join(f'{lr:g}' for lr in stuck)}; "
                     + (f"the advised {' and '.join(f'{lr:g}' for lr in fixed)} took it below, so the advice held."
                        if fixed else "the advised 1e-4 and 3e-4 did not take it below either, so the advice did not "
                        "help here: train longer, or look at the data."))
    return " ".join(words)


def layer_grid(cfg: CourseConfig, out_dir: Path, progress: bool = False) -> list[dict]:
    """Speed against accuracy: a fresh adapter trained for one epoch on a balanced subset of each size in
    `cfg.layer_grid_rows`, with LoRA on the top K blocks for each K in `cfg.layer_grid_layers` (0: every block),
    scored on `cfg.layer_grid_eval_size` rows of the eval split — never the test split: this grid chooses the
    workshop's budget. Returns one {"layers", "rows", "train_seconds", "rows_per_second", "eval_macro_f1",
    "eval_accuracy", "eval_rows"} per run."""
    grid = dataclasses.replace(cfg, train_size=max(cfg.layer_grid_rows), eval_size=cfg.layer_grid_eval_size)
    splits = prepare_splits(grid)
    points = []
    for rows in cfg.layer_grid_rows:
        subset = balanced_sample(splits.train, rows, cfg.labels, cfg.seed, min_per_class=1, source="layer grid")
        for layers in cfg.layer_grid_layers:
            run = dataclasses.replace(grid, lora_layers=layers, train_size=len(subset),
                                      max_steps=max(1, len(subset) // cfg.batch_size))
            trainer, result = train_fresh(run, to_chat_records(subset, cfg), Path(out_dir) / f"grid_{layers}_{rows}",
                                          progress=progress)
            scored = hf_predictor(trainer.model.merge_and_unload(), trainer.processing_class, cfg).evaluate(
                splits.eval, progress=progress)
            seconds = result["train_seconds"]
            points.append({"layers": layers, "rows": len(subset), "train_seconds": seconds,
                           "rows_per_second": run.max_steps * cfg.batch_size / seconds,
                           "eval_macro_f1": scored["macro_f1"], "eval_accuracy": scored["accuracy"],
                           "eval_rows": len(splits.eval)})
            del trainer, scored
            free_memory()
    return points


def train_and_diagnose(cfg: CourseConfig, splits: Splits, out_dir: Path, conflicting_texts: int = 0,
                       progress: bool = False) -> dict:
    """Notebook 02's training with `cfg`'s knobs, on a fresh adapter: trained with the eval loss logged, its decision
    rule chosen on the eval split, scored on the test split by label scoring, and its curve read by `diagnose`.
    Returns {"log_history", "train_seconds", "diagnosis", "macro_f1", "accuracy", "predictions"}."""
    trainer, run = train_fresh(cfg, to_chat_records(splits.train, cfg), Path(out_dir) / "trainer", progress=progress,
                               eval_records=to_chat_records(splits.eval, cfg))
    predictor = hf_predictor(trainer.model, trainer.processing_class, cfg)
    rule = choose_decision_rule(cfg, predictor, splits.eval, short_classes(splits, cfg))
    scored = hf_predictor(trainer.model, trainer.processing_class, cfg, offsets=rule["offsets"]).evaluate(
        splits.test, progress=progress)
    del trainer, predictor
    free_memory()
    return {"log_history": run["log_history"], "train_seconds": run["train_seconds"],
            "diagnosis": diagnose(run["log_history"], conflicting_texts, cfg.batch_size, cfg.learning_rate),
            **{k: scored[k] for k in ("macro_f1", "accuracy", "predictions")}}


def curve_noise(log_history: list[dict]) -> float:
    """How jagged the logged training loss is once the first drop is over: the standard deviation of the step-to-step
    changes over the second half of the logged points, divided by sqrt(2) (the noise of one point, were the curve
    flat)."""
    losses = np.array([loss for _, loss in train_losses(log_history)])
    tail = np.diff(losses[len(losses) // 2:])
    return float(tail.std() / np.sqrt(2)) if len(tail) > 1 else float("nan")


def learning_rate_sentence(runs: dict[float, dict], chapter_rate: float, chapter: dict, gold, labels, seed: int) -> str:
    """What `diagnose` said at each learning rate ({rate: `train_and_diagnose`}), beside the chapter's rate, with
    each run's test macro-F1 against the chapter's model (the paired bootstrap decides)."""
    parts = []
    for rate, run in runs.items():
        test = verdict(gold, {**run, "method": f"lr {rate:g}"}, {**chapter, "method": f"lr {chapter_rate:g}"}, labels,
                       seed)
        parts.append(f"at {rate:g} diagnose says {run['diagnosis']['status']!r} ({run['diagnosis']['advice'][0]}), "
                     f"and the model scores {run['macro_f1']:.3f} macro-F1, {COMPARED[test['outcome']]} the chapter's "
                     f"{chapter['macro_f1']:.3f} at {chapter_rate:g} ({test['interval']})")
    said = "; ".join(parts)
    return said[:1].upper() + said[1:] + "."


COMPARED = {"ahead": "above", "tied": "tied with", "behind": "below"}  # a `verdict` outcome, against a rival


def batch_sentence(small: dict, chapter: dict, small_batch: int, chapter_batch: int, gold, labels, seed: int) -> str:
    """Half the batch for twice the steps (the same examples seen) against the chapter's run: how much noisier the
    logged curve is (`curve_noise`) and whether the test score differs outside the noise."""
    noise = {name: curve_noise(run["log_history"]) for name, run in (("small", small), ("chapter", chapter))}
    test = verdict(gold, {**small, "method": f"batch {small_batch}"}, {**chapter, "method": f"batch {chapter_batch}"},
                   labels, seed)
    if not all(np.isfinite(list(noise.values()))) or noise["chapter"] == 0:
        curve = "Too few logged points after the first drop to say whether the curve is noisier (log more often)."
    else:
        ratio = noise["small"] / noise["chapter"]
        said = "noisier" if ratio > 1.2 else "smoother" if ratio < 1 / 1.2 else "about as noisy"
        curve = (f"Batch {small_batch} for twice the steps: the logged loss moves by {noise['small']:.3f} from point to "
                 f"point against {noise['chapter']:.3f} at batch {chapter_batch} ({ratio:.1f}x: {said}).")
    after = " So the same examples in smaller batches bought no score here." if test["tie"] else ""
    return f"{curve} {test['sentence']}{after}"
