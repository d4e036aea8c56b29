"""Distil the fine-tuned LLM into the small encoder (notebook 06): the LLM labels reviews it was never trained on, the
encoder learns from its probabilities, and the numbers say whether you get the LLM's accuracy at the encoder's cost.

- The teacher is notebook 02's fine-tuned LLM (its merged folder, with its decision rule), through the one predictor.
  It labels the pool (`data.distillation_pool`) with `classify.classify_file`, so an interrupted pass resumes where it
  stopped and a finished one is not run again.
- The student is notebook 05's encoder (MiniLM), fine-tuned with the same recipe on the gold rows plus the pool: KL
  divergence from the teacher's probabilities on the pool rows, plus `cfg.distill_alpha` x cross-entropy on the gold
  rows. Notebook 06 writes that loss out in a take-home `compute_loss`; `encoder.finetune_encoder(targets=...)` builds
  the same Trainer (`encoder.soft_target_trainer()`, `encoder.distillation_loss`) for the twin and the experiments.
- Beside it, on the same test reviews (and out of domain): the student on the teacher's hard labels (the ablation),
  MiniLM on the gold rows only (notebook 05's encoder), the teacher, and MiniLM on the pool's gold labels (the upper
  bound, where the pool's labels are known). Every comparison is called by the paired bootstrap (`evaluate.verdict`).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import encoder
from helpers.alternatives import (ENCODER, Comparison, add_kept_encoder_rows, kept_encoder_models, out_of_domain_set,
                                  score)
from helpers.classify import classify_file
from helpers.config import ROOT, CourseConfig
from helpers.data import UNLABELLED, DataError, balanced_sample, distillation_pool, load_dataset
from helpers.evaluate import verdict
from helpers.modelcard import write_model_card
from helpers.predict import load_predictor
from helpers.runs import DISTILLATION, TRAINING, RunError, layout, missing_input

STUDENT, HARD, GOLD_ONLY = ("student: MiniLM on the teacher's probabilities", "student: MiniLM on the teacher's labels",
                            ENCODER)
TEACHER, UPPER = "teacher: fine-tuned LLM, HF fp32", "MiniLM on the pool's gold labels (upper bound)"
# What the workshop shows in place of its own run (`distillation`): `make bench PARTS=distill` writes it.
RECORDED = ROOT / "docs" / "distillation-bench.json"
RECORDED_COMMAND = "make bench PARTS=distill PROFILE=deep"
# The few-gold regime as notebook 06 shows it unless `distill_few` is "live": `make bench PARTS=distill-few` writes it.
RECORDED_FEW = ROOT / "docs" / "distillation-few-bench.json"
RECORDED_FEW_COMMAND = "make bench PARTS=distill-few"


def teacher_model(cfg: CourseConfig) -> Path:
    """Notebook 02's merged fine-tuned LLM in this run, or a RunError that says which notebook makes it."""
    merged = layout(cfg).merged
    if not (merged / "config.json").is_file():
        raise RunError(missing_input(cfg, "the fine-tuned LLM (02_logged_training/merged)", TRAINING))
    return merged


def pool_file(pool: pd.DataFrame, out_dir: Path) -> Path:
    """`<out_dir>/pool-<hash>.csv`: the pool's texts alone (the teacher never sees a gold label), named by their
    content, so that another pool (another `distill_pool_size`, say) gets files of its own beside this one's."""
    texts = pool[["text"]].to_csv(index=False)
    path = Path(out_dir) / f"pool-{hashlib.sha256(texts.encode()).hexdigest()[:12]}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(texts, encoding="utf-8")
    return path


def teacher_probabilities(cfg: CourseConfig, pool: pd.DataFrame, out_dir: Path, progress: bool = True) -> np.ndarray:
    """The teacher's label probabilities for every row of `pool` ((rows, labels), `cfg.labels` order; NaN for a row
    the teacher could not label), by `classify_file` over `pool_file` into `<that file>.labelled.csv`: a pass that
    was interrupted resumes, and one that finished is only read back."""
    if pool.empty:
        raise DataError(f"{cfg.dataset}: no row is left to distil from (every labelled row of the training side is "
                        f"among the LLM's training rows). Give your file rows with an empty label, or lower train_size.")
    source = pool_file(pool, out_dir)
    labelled = source.with_name(f"{source.stem}.labelled.csv")
    classify_file(cfg, source, labelled, teacher_model(cfg), text_column="text", batch_size=cfg.scoring_batch_size,
                  progress=progress)
    out = np.full((len(pool), len(cfg.labels)), np.nan)
    with labelled.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            out[int(row["row"]) - 1] = [float(row[f"p_{label}"]) for label in cfg.labels]
    return out


def pool_sentence(cfg: CourseConfig, pool: pd.DataFrame, n_train: int) -> str:
    """Where the pool comes from, how big it is, and (where they are known) its hidden gold labels per class."""
    if (pool["label"] == UNLABELLED).all():
        return f"The pool: the {len(pool):,} rows of {cfg.dataset} whose label is empty."
    counts = pool["label"].value_counts()
    spread = ", ".join(f"{label} {int(counts.get(label, 0))}" for label in cfg.labels)
    return (f"The pool: {len(pool):,} rows of the training side of {cfg.dataset} beyond the LLM's {n_train:,} training "
            f"rows (their gold labels, hidden from the student: {spread}).")


def teacher_sentence(cfg: CourseConfig, pool: pd.DataFrame, targets: np.ndarray) -> str:
    """How many pool rows the teacher labelled, how sure it was, and how often it agrees with the hidden gold label."""
    done = ~np.isnan(targets).any(1)
    said = f"The teacher labelled {int(done.sum()):,} of {len(pool):,} rows"
    if not done.any():
        return said + "."
    said += f" (mean top probability {np.nanmax(targets[done], 1).mean():.2f})"
    known = done & (pool["label"] != UNLABELLED).to_numpy()
    if not known.any():
        return said + "."
    agree = (np.array(cfg.labels)[targets[known].argmax(1)] == pool["label"].to_numpy()[known]).mean()
    return said + f"; its label is the hidden gold label on {agree:.1%} of them."


def hard_labels(probabilities: np.ndarray) -> np.ndarray:
    """Each row's most probable label as a one-hot row (NaN rows stay NaN): the teacher's labels without its doubt."""
    out = np.eye(probabilities.shape[1])[np.nan_to_num(probabilities, nan=0.0).argmax(1)]
    out[np.isnan(probabilities).any(1)] = np.nan
    return out


def student_rows(gold: pd.DataFrame, pool: pd.DataFrame, targets: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """(gold rows + pool rows with their gold labels hidden, the targets: NaN for the gold rows, `targets` for the
    pool). The student learns the gold rows' labels and the pool's targets; never the pool's gold labels."""
    rows = pd.concat([gold[["text", "label"]], pool[["text"]].assign(label=UNLABELLED)], ignore_index=True)
    return rows, np.vstack([np.full((len(gold), targets.shape[1]), np.nan), targets])


def train_student(cfg: CourseConfig, gold: pd.DataFrame, pool: pd.DataFrame, targets: np.ndarray, out_dir: Path,
                  progress: bool = False) -> dict:
    """MiniLM fine-tuned by notebook 05's recipe on the gold rows and the pool's `targets` (`finetune_encoder`)."""
    rows, all_targets = student_rows(gold, pool, targets)
    return encoder.finetune_encoder(cfg, rows, out_dir, progress=progress, targets=all_targets)


def add_student_row(comparison: Comparison, cfg: CourseConfig, method: str, gold, pool, targets, out_dir: Path,
                    progress: bool = False, student: dict | None = None) -> dict:
    """A student scored on every domain: `student` where it was trained already (notebook 06's take-home cells,
    `encoder.finished_encoder`), else trained here (`train_student`). Returns `finished_encoder`'s dict."""
    student = student or train_student(cfg, gold, pool, targets, out_dir, progress)
    comparison.add(method, "student", lambda: student["predict"], student["train_seconds"], student["size_mb"],
                   len(gold) + len(pool))
    return student


def add_teacher_row(comparison: Comparison, cfg: CourseConfig, n_train: int) -> None:
    """The teacher scored on every domain, with notebook 02's training seconds and its size on disk."""
    trained = layout(cfg).metrics(TRAINING) or {}
    predictor = load_predictor(cfg, teacher_model(cfg))
    comparison.add(TEACHER, "fine-tuned LLM", lambda: predictor.probabilities, trained.get("train_seconds"),
                   predictor.size_mb, n_train)


def add_gold_only_row(comparison: Comparison, cfg: CourseConfig, gold: pd.DataFrame, out_dir: Path,
                      progress: bool = False) -> None:
    """MiniLM on the gold rows alone: notebook 05's fine-tuned encoder where the run keeps it, else trained here."""
    if ENCODER in kept_encoder_models(cfg):
        add_kept_encoder_rows(comparison, cfg, methods=(ENCODER,))
    else:
        tuned = encoder.finetune_encoder(cfg, gold, out_dir, progress=progress)
        comparison.add(GOLD_ONLY, "encoder", lambda: tuned["predict"], tuned["train_seconds"], tuned["size_mb"],
                       len(gold))


def add_upper_bound_row(comparison: Comparison, cfg: CourseConfig, gold: pd.DataFrame, pool: pd.DataFrame,
                        out_dir: Path, progress: bool = False) -> bool:
    """MiniLM on the gold rows plus the pool with its own gold labels, where the pool has them (not for your
    unlabelled rows): how far a perfect teacher would take the student. Returns whether the row was added."""
    if (pool["label"] == UNLABELLED).any():
        return False
    rows = pd.concat([gold[["text", "label"]], pool[["text", "label"]]], ignore_index=True)
    tuned = encoder.finetune_encoder(cfg, rows, out_dir, progress=progress)
    comparison.add(UPPER, "encoder", lambda: tuned["predict"], tuned["train_seconds"], tuned["size_mb"], len(rows))
    return True


def add_distillation_rows(comparison: Comparison, cfg: CourseConfig, gold: pd.DataFrame, pool: pd.DataFrame,
                          targets: np.ndarray, out_dir: Path, progress: bool = False,
                          student: dict | None = None) -> dict:
    """The chapter's table: the teacher, MiniLM on the gold rows only, the student (kept in `<out_dir>/student`;
    `student` where notebook 06 trained it already), the student on the teacher's hard labels, and the upper bound
    where the pool's labels are known (those three are caches, `rival_*`). Returns the student's
    `encoder.finished_encoder` dict."""
    out_dir = Path(out_dir)
    add_teacher_row(comparison, cfg, len(gold))
    add_gold_only_row(comparison, cfg, gold, out_dir / "rival_gold_only", progress)
    student = add_student_row(comparison, cfg, STUDENT, gold, pool, targets, out_dir / "student", progress, student)
    add_student_row(comparison, cfg, HARD, gold, pool, hard_labels(targets), out_dir / "rival_hard", progress)
    add_upper_bound_row(comparison, cfg, gold, pool, out_dir / "rival_upper_bound", progress)
    return student


def distillation_figures(cfg: CourseConfig, curve: list[dict], pool: pd.DataFrame, targets: np.ndarray,
                         n_train: int) -> dict:
    """What notebook 06 records beside its table and verdicts: the curve, the pool and the teacher's pass."""
    return {"curve": [{"size": p["size"], "macro_f1": p["macro_f1"]} for p in curve], "pool_rows": len(pool),
            "pool_unlabelled": bool((pool["label"] == UNLABELLED).all()), "alpha": cfg.distill_alpha,
            "teacher_labelled": int((~np.isnan(targets).any(1)).sum()),
            "pool_sentence": pool_sentence(cfg, pool, n_train), "teacher_sentence": teacher_sentence(cfg, pool, targets)}


def pool_curve(cfg: CourseConfig, comparison: Comparison, gold, pool, targets, out_dir: Path,
               progress: bool = False) -> list[dict]:
    """The student's macro-F1 on the test split against the pool rows it learned from: 0 (MiniLM on the gold rows
    only), each of `cfg.distill_curve_sizes` below the pool's size (the pool's first rows, trained here), and the whole
    pool (the student's row of `comparison`)."""
    rows = {r["method"]: r for r in comparison.rows["test"]}
    points = [{"size": 0, "macro_f1": rows[GOLD_ONLY]["macro_f1"], "predictions": rows[GOLD_ONLY]["predictions"]}]
    test = comparison.domains["test"]
    for size in sorted(s for s in cfg.distill_curve_sizes if 0 < s < len(pool)):
        student = train_student(cfg, gold, pool.head(size), targets[:size], Path(out_dir) / f"curve_student_{size}",
                                progress)
        scored = score(student["predict"], test, cfg.labels)
        points.append({"size": size, "macro_f1": scored["macro_f1"], "predictions": scored["predictions"]})
    points.append({"size": len(pool), "macro_f1": rows[STUDENT]["macro_f1"], "predictions": rows[STUDENT]["predictions"]})
    return points


def distillation_verdict(comparison: Comparison, seed: int) -> dict[str, str]:
    """The chapter's conclusions, each from the paired bootstrap on the same test reviews: the student against the
    teacher, against MiniLM on the gold rows only, soft against hard targets; its speed and size against the teacher's;
    and the closing sentence: when distillation pays, and by how much."""
    gold = list(comparison.domains["test"]["label"])
    rows = {r["method"]: r for r in comparison.rows["test"]}
    student, teacher, alone, hard = (rows[m] for m in (STUDENT, TEACHER, GOLD_ONLY, HARD))
    labels = comparison.labels
    vs_teacher, vs_alone, vs_hard = (verdict(gold, student, other, labels, seed) for other in (teacher, alone, hard))
    speed = student["reviews_per_second"] / teacher["reviews_per_second"]
    size = teacher["size_mb"] / student["size_mb"] if student["size_mb"] and teacher["size_mb"] else None
    out = {"vs_teacher": vs_teacher["sentence"], "vs_gold_only": vs_alone["sentence"],
           "soft_vs_hard": vs_hard["sentence"],
           "cost": (f"The student labels {student['reviews_per_second']:.0f} reviews/s against the teacher's "
                    f"{teacher['reviews_per_second']:.0f} ({speed:.1f}x)" +
                    (f", from {student['size_mb']:.0f} MB against {teacher['size_mb']:.0f} MB ({size:.1f}x less)."
                     if size else "."))}
    if UPPER in rows:
        out["upper_bound"] = verdict(gold, student, rows[UPPER], labels, seed)["sentence"]
    if "ood" in comparison.rows:  # out of domain the teacher's pre-training may travel into the student
        far = {r["method"]: r for r in comparison.rows["ood"]}
        out["ood_vs_gold_only"] = "Out of domain: " + verdict(list(comparison.domains["ood"]["label"]), far[STUDENT],
                                                              far[GOLD_ONLY], labels, seed,
                                                              where="the out-of-domain set")["sentence"]
    out["closing"] = closing_sentence(vs_teacher, vs_alone, student, teacher, alone, speed)
    return out


def closing_sentence(vs_teacher: dict, vs_alone: dict, student: dict, teacher: dict, alone: dict, speed: float) -> str:
    """When distillation pays, from the two verdicts: it pays when the student beats MiniLM on the gold rows beyond
    the noise; it pays in full when it also ties (or beats) the teacher."""
    gain = student["macro_f1"] - alone["macro_f1"]
    gap = teacher["macro_f1"] - student["macro_f1"]
    beats_alone = vs_alone["outcome"] == "ahead"
    keeps_up = vs_teacher["outcome"] != "behind"
    figures = (f"student {student['macro_f1']:.3f}, teacher {teacher['macro_f1']:.3f}, MiniLM on the gold rows only "
               f"{alone['macro_f1']:.3f} macro-F1; the student is {speed:.1f}x the teacher's speed")
    if beats_alone and keeps_up:
        return (f"Distillation pays in full here: the student gains {gain:+.3f} over MiniLM on the gold rows and is "
                f"tied with its teacher within the test set's noise ({figures}).")
    if beats_alone:
        return (f"Distillation pays in part here: the student gains {gain:+.3f} over MiniLM on the gold rows beyond "
                f"the noise, but stays {gap:.3f} behind its teacher ({figures}).")
    return (f"Distillation does not pay here: the student is not above MiniLM on the gold rows beyond the test set's "
            f"noise ({gain:+.3f}; {figures}). More unlabelled rows, or a stronger teacher, would be the next thing "
            f"to try.")


def write_student_card(cfg: CourseConfig, comparison: Comparison, pool: pd.DataFrame, n_gold: int, folder: Path,
                       said: dict) -> Path:
    """The student's model card (README.md in its folder): its teacher, the pool it learned from, its test results
    and the chapter's verdict against the teacher."""
    row = next(r for r in comparison.rows["test"] if r["method"] == STUDENT)
    source = ("the rows of your file whose label is empty" if (pool["label"] == UNLABELLED).all() else
              f"training-side rows of {cfg.dataset} beyond the LLM's own training rows")
    return write_model_card(cfg, folder, "student", {**row, "teacher": str(teacher_model(cfg)),
                                                     "pool": f"{len(pool):,} unlabelled rows ({source})",
                                                     "gold_rows": n_gold, "verdict": said["vs_teacher"]})


# --- the worked solutions of the chapter's exercises (notebooks/solutions/06_distillation.ipynb) -------------------

def alpha_sentence(gold, rows: list[dict], method: str, alpha: float, labels, seed: int) -> dict:
    """Exercise 1: the student trained with `distill_alpha=alpha` (its row named `method`) against MiniLM on the gold
    rows only and against the chapter's student, each by the paired bootstrap."""
    by = {r["method"]: r for r in rows}
    against = {name: verdict(gold, by[method], by[name], labels, seed) for name in (GOLD_ONLY, STUDENT)}
    still = {"ahead": "still beats", "tied": "is tied with", "behind": "falls behind"}[against[GOLD_ONLY]["outcome"]]
    sentence = (f"With distill_alpha={alpha:g} the student {still} MiniLM on the gold rows only "
                f"({against[GOLD_ONLY]['interval']}); against the chapter's student "
                f"(distill_alpha from the run) it is {against[STUDENT]['outcome']} ({against[STUDENT]['interval']}).")
    return {"sentence": sentence, "figures": {name: {"macro_f1": by[name]["macro_f1"], "outcome": v["outcome"],
                                                    "interval": v["interval"]} for name, v in against.items()}
            | {method: {"macro_f1": by[method]["macro_f1"]}}}


def levels_off_sentence(curve: list[dict], gold, labels, seed: int) -> dict:
    """Exercise 2: the smallest pool size on the curve whose student is tied with (or ahead of) the student on the
    whole pool by the paired bootstrap: where more unlabelled rows stop paying on this test set."""
    points = sorted(curve, key=lambda p: p["size"])
    whole = points[-1]
    named = [{**p, "method": f"student on {p['size']} rows"} for p in points]
    tied = [p for p in named[:-1] if verdict(gold, p, {**whole, "method": "whole pool"}, labels, seed)["outcome"] != "behind"]
    figures = {p["size"]: round(p["macro_f1"], 4) for p in points}
    if not tied:
        return {"sentence": (f"The gain has not levelled off within the pool: every smaller pool is behind the whole "
                             f"pool's {whole['macro_f1']:.3f} beyond the noise, so more unlabelled rows would likely "
                             f"still help."), "figures": figures, "levels_off_at": None}
    first = tied[0]
    if first["size"] == 0:  # MiniLM on the gold rows alone: the pool's rows add nothing the test set can tell apart
        return {"sentence": (f"The pool does not pay on this test set: MiniLM on the gold rows alone "
                             f"({first['macro_f1']:.3f}) is already tied with the student on the whole pool of "
                             f"{whole['size']:,} rows ({whole['macro_f1']:.3f}) within the test set's noise."),
                "figures": figures, "levels_off_at": 0}
    return {"sentence": (f"The gain levels off by {first['size']:,} rows of the pool's {whole['size']:,}: from there "
                         f"on the student ({first['macro_f1']:.3f}) is tied with the one on the whole pool "
                         f"({whole['macro_f1']:.3f}) within the test set's noise."),
            "figures": figures, "levels_off_at": first["size"]}


def chapter_student(cfg: CourseConfig, gold: pd.DataFrame, pool: pd.DataFrame, targets: np.ndarray,
                    progress: bool = False) -> Path:
    """The chapter's student (`06_distillation/student`), trained there first (`train_student`) where the chapter
    showed recorded figures instead of training it (the workshop's `distillation`)."""
    folder = layout(cfg).folder(DISTILLATION) / "student"
    if not (folder / "config.json").is_file():
        train_student(cfg, gold, pool, targets, folder, progress)
    return folder


def add_kept_student_row(comparison: Comparison, cfg: CourseConfig) -> None:
    """The chapter's student as the run folder keeps it (`06_distillation/student`), scored on every domain."""
    folder = layout(cfg).folder(DISTILLATION) / "student"
    if not folder.is_dir():
        raise RunError(missing_input(cfg, "the student (06_distillation/student)", DISTILLATION))
    comparison.add(STUDENT, "student", lambda: load_predictor(cfg, folder).probabilities)


# --- the recorded chapter: what the workshop shows in place of a 34-minute run ---------------------------------------

def recorded_distillation(cfg: CourseConfig, pool: pd.DataFrame | None = None) -> dict | None:
    """None where notebook 06 runs live (`cfg.distillation`: "live", or "auto" anywhere but the workshop profile on
    the course's own data and model, or where no recorded file exists); else the figures `make bench PARTS=distill`
    recorded (`bench.part_distill`), read from `cfg.distill_recorded` (default `RECORDED`). Where "auto" would run live
    on a `pool` of fewer than `cfg.distill_min_pool` rows, the recorded figures too, marked with the pool's size
    ("small_pool"): such a pool teaches nothing worth minutes of training."""
    path = Path(cfg.distill_recorded) if cfg.distill_recorded else RECORDED
    course_default = (cfg.profile, cfg.dataset, cfg.model) == ("workshop", "amazon", "embedded:smollm2")
    if cfg.distillation == "live" or (cfg.distillation == "auto" and not (course_default and path.is_file())):
        small = pool is not None and len(pool) < cfg.distill_min_pool
        if small and cfg.distillation == "auto" and path.is_file():
            return {**json.loads(path.read_text(encoding="utf-8")), "small_pool": len(pool)}
        return None
    if not path.is_file():
        raise RunError(f"No recorded distillation figures at {path}: {RECORDED_COMMAND} writes them, or set "
                       f"distillation='live' to run the chapter here.")
    return json.loads(path.read_text(encoding="utf-8"))


def distills_live(cfg: CourseConfig, splits) -> bool:
    """Whether notebook 06 will train on this run's pool (True) or show recorded figures (`recorded_distillation`):
    what notebook 00's time estimate counts it as."""
    return recorded_distillation(cfg, distillation_pool(cfg, splits)) is None


def recorded_sentence(cfg: CourseConfig, recorded: dict) -> str:
    """Where the figures come from and how to make them yourself: the first thing the recorded chapter says."""
    runs = recorded["runs"]
    minutes, chapter = (sum(r[key] for r in runs) / len(runs) / 60 for key in ("course_wall_seconds", "wall_seconds"))
    if "small_pool" in recorded:
        return (f"Not run here: the pool has {recorded['small_pool']:,} rows, fewer than distill_min_pool "
                f"({cfg.distill_min_pool}), too few for the teacher to teach a student anything. Give your file rows "
                f"with an empty label (they become the pool), or set distillation='live' to train anyway. Below: what "
                f"`{recorded['command']}` measured on the course's own data ({recorded['profile']} profile, seeds "
                f"{', '.join(str(r['seed']) for r in runs)}; notebook 06 alone took {chapter:.0f} min per seed).")
    return (f"Recorded, not run here: in the {cfg.profile} profile this chapter takes longer than the "
            f"workshop's budget, so it shows notebook 06 as `{recorded['command']}` measured it on "
            f"{recorded['date'][:10]} ({recorded['cpus']} cores, the {recorded['profile']} profile, seeds "
            f"{', '.join(str(r['seed']) for r in runs)} on one split; notebooks 00, 02 and 06 took {minutes:.0f} min "
            f"per seed, notebook 06 alone {chapter:.0f}). Run it yourself with "
            f"`make course PROFILE={recorded['profile']}`, or here with overrides={{'distillation': 'live'}}.")


def recorded_teacher(recorded: dict) -> str:
    """Each recorded seed's pool and teacher sentences, as its run printed them."""
    return "\n".join(f"Seed {run['seed']}: {run['pool_sentence']} {run['teacher_sentence']}" for run in recorded["runs"])


def recorded_table(recorded: dict, domain: str = "test") -> pd.DataFrame:
    """One row per method: macro-F1 over the seeds (mean, sample sd, min, max), reviews/s, MB and training seconds."""
    rows = []
    for method, f1 in recorded["macro_f1"].get(domain, {}).items():
        kept = [r for run in recorded["runs"] for r in run["results"][domain] if r["method"] == method]
        mean = lambda key: float(np.mean([r[key] for r in kept])) if all(r.get(key) is not None for r in kept) else None
        rows.append({"method": method, "macro_f1": f1["mean"], "sd": f1["sd"], "min": f1["min"], "max": f1["max"],
                     "reviews_per_second": mean("reviews_per_second"), "size_mb": mean("size_mb"),
                     "train_seconds": mean("train_seconds")})
    return pd.DataFrame(rows).set_index("method").sort_values("macro_f1", ascending=False)


def recorded_curve(recorded: dict) -> tuple[list[dict], float, list[dict] | None]:
    """(the student's curve, its macro-F1 at each pool size averaged over the seeds that measured that size, with
    their count; the teacher's mean; the upper bound's mean at the whole pool, or None), for
    `plots.plot_distillation_curve`."""
    runs = recorded["runs"]
    at = {size: [p["macro_f1"] for run in runs for p in run["curve"] if p["size"] == size]
          for size in sorted({p["size"] for run in runs for p in run["curve"]})}
    curve = [{"size": size, "macro_f1": float(np.mean(f1)), "seeds": len(f1)} for size, f1 in at.items()]
    sizes = list(at)
    test = recorded["macro_f1"]["test"]
    upper = [{"size": sizes[-1], "macro_f1": test[UPPER]["mean"]}] if UPPER in test else None
    return curve, test[TEACHER]["mean"], upper


def recorded_verdict(recorded: dict) -> dict[str, str]:
    """The gaps over the seeds (mean ± sample sd), then each seed's closing sentence, as its run computed it."""
    gaps, far = recorded["gaps"], recorded["macro_f1"].get("ood", {})
    over = (f"Over {len(recorded['runs'])} seeds the student is {gaps['teacher_minus_student']['mean']:.3f} ± "
            f"{gaps['teacher_minus_student']['sd']:.3f} macro-F1 behind its teacher, "
            f"{gaps['student_minus_gold_only']['mean']:+.3f} ± {gaps['student_minus_gold_only']['sd']:.3f} against "
            f"MiniLM on the gold rows only, at {gaps['speed_vs_teacher']['mean']:.1f}x the teacher's reviews/s" +
            (f"; out of domain {far[STUDENT]['mean'] - far[GOLD_ONLY]['mean']:+.3f} against MiniLM on the gold rows "
             f"(means over the seeds)." if STUDENT in far and GOLD_ONLY in far else "."))
    return {"over_seeds": over, **{f"seed_{run['seed']}": f"Seed {run['seed']}: {run['verdict']['closing']}"
                                   for run in recorded["runs"]}}


def recorded_metrics(recorded: dict) -> dict:
    """What the recorded chapter puts in its metrics file: its first seed's figures in the live chapter's form (the
    report and the teacher's guide read them as they read a live run's), and where they come from."""
    first = recorded["runs"][0]
    keep = ("results", "verdict", "curve", "pool_rows", "pool_unlabelled", "alpha", "teacher_labelled")
    return {**{key: first[key] for key in keep if key in first},
            "recorded": {key: recorded[key] for key in ("command", "date", "profile", "cpus", "gaps")}
            | {"seeds": [r["seed"] for r in recorded["runs"]]}
            | ({"small_pool": recorded["small_pool"]} if "small_pool" in recorded else {})}


# --- where distillation should pay: few gold rows, a pool many times larger -------------------------------------------

IN_DOMAIN = "in domain"


def few_gold_pools(cfg: CourseConfig, splits) -> dict[str, pd.DataFrame]:
    """The two pools of the few-gold regime, each `cfg.distill_few_pool_rows` rows with their gold labels kept for the
    record (no student ever trains on them): the chapter's own pool (`data.distillation_pool`: rows the teacher never
    trained on), and `cfg.distill_few_ood_pool`'s rows that are not in the out-of-domain test set."""
    pools = {IN_DOMAIN: distillation_pool(cfg, splits).head(cfg.distill_few_pool_rows)}
    if cfg.distill_few_ood_pool:
        other = load_dataset(dataclasses.replace(cfg, dataset=cfg.distill_few_ood_pool))
        ood = out_of_domain_set(cfg)
        held = set(ood["text"]) if ood is not None and cfg.ood_dataset == cfg.distill_few_ood_pool else set()
        other = other[~other["text"].isin(held)].drop_duplicates("text")
        pools[cfg.distill_few_ood_pool] = other.sample(frac=1.0, random_state=cfg.split_seed).head(
            cfg.distill_few_pool_rows).reset_index(drop=True)
    return pools


def few_gold_regime(cfg: CourseConfig, splits, out_dir: Path, progress: bool = False) -> dict:
    """Distillation where it is expected to pay: for each of `cfg.distill_few_gold_sizes` balanced gold rows (drawn
    from the teacher's own training rows with `cfg.seed`), MiniLM on those rows alone and a student on the same rows
    plus each pool of `few_gold_pools` with the teacher's probabilities, all scored on the test split and out of
    domain beside the teacher. Returns {"pools": {name: rows}, "points": one row per (gold rows, pool, domain) with
    the three macro-F1 and the paired bootstrap of the student against MiniLM alone and against the teacher}."""
    out_dir = Path(out_dir)
    domains = {"test": splits.test}
    ood = out_of_domain_set(cfg)
    if ood is not None:
        domains["ood"] = ood
    teacher = load_predictor(cfg, teacher_model(cfg))
    teacher_rows = {d: {**score(teacher.probabilities, df, cfg.labels), "method": TEACHER} for d, df in domains.items()}
    pools = few_gold_pools(cfg, splits)
    targets = {name: teacher_probabilities(cfg, pool, out_dir / f"pool_{slug(name)}", progress)
               for name, pool in pools.items()}
    points = []
    for size in cfg.distill_few_gold_sizes:
        gold = balanced_sample(splits.train, size, cfg.labels, cfg.seed, min_per_class=1, source="few gold rows")
        alone = encoder.finetune_encoder(cfg, gold, out_dir / f"gold_only_{size}", progress=progress)
        alone_rows = {d: {**score(alone["predict"], df, cfg.labels), "method": GOLD_ONLY} for d, df in domains.items()}
        for name, pool in pools.items():
            student = train_student(cfg, gold, pool, targets[name], out_dir / f"student_{slug(name)}_{size}", progress)
            for d, df in domains.items():
                row = {**score(student["predict"], df, cfg.labels), "method": STUDENT}
                gold_labels = list(df["label"])
                tests = {key: verdict(gold_labels, row, other, cfg.labels, cfg.seed)
                         for key, other in (("vs_gold_only", alone_rows[d]), ("vs_teacher", teacher_rows[d]))}
                points.append({"gold_rows": size, "pool": name, "pool_rows": len(pool), "domain": d, "n": len(df),
                               "student": row["macro_f1"], "gold_only": alone_rows[d]["macro_f1"],
                               "teacher": teacher_rows[d]["macro_f1"],
                               **{key: {k: t[k] for k in ("difference", "low", "high", "outcome")}
                                  for key, t in tests.items()}})
    return {"pools": {name: len(pool) for name, pool in pools.items()}, "points": points}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def few_gold_sentence(points: list[dict], domain: str = "test") -> str:
    """Per pool, in `domain`: at each gold size whether the student beats MiniLM on the gold rows alone and whether it
    ties its teacher (the paired bootstrap), and the fewest gold rows where the student no longer beats MiniLM alone
    (where the lines cross), if any."""
    said = []
    for pool in dict.fromkeys(p["pool"] for p in points):
        mine = sorted((p for p in points if p["pool"] == pool and p["domain"] == domain), key=lambda p: p["gold_rows"])
        if not mine:
            continue
        steps = "; ".join(f"{p['gold_rows']} gold rows: student {p['student']:.3f} vs MiniLM alone {p['gold_only']:.3f} "
                          f"({p['vs_gold_only']['outcome']}), teacher {p['teacher']:.3f} "
                          f"({'tied' if p['vs_teacher']['outcome'] == 'tied' else p['vs_teacher']['outcome']})"
                          for p in mine)
        wins = [p["gold_rows"] for p in mine if p["vs_gold_only"]["outcome"] == "ahead"]
        cross = next((p["gold_rows"] for p in mine if p["vs_gold_only"]["outcome"] != "ahead"), None)
        end = ("the student beats MiniLM alone at every size" if len(wins) == len(mine) else
               "the student never beats MiniLM alone beyond the noise" if not wins else
               f"the student stops beating MiniLM alone from {cross} gold rows")
        said.append(f"Pool {pool} ({mine[0]['pool_rows']} rows): {steps}. So {end}.")
    return " ".join(said)


def few_gold_curve(points: list[dict], domain: str = "test") -> list[dict]:
    """The regime as learning-curve points (`plots.plot_learning_curve`): MiniLM alone, the student on each pool and
    the teacher, against the gold rows."""
    out = []
    for p in (p for p in points if p["domain"] == domain):
        out.append({"method": f"student, pool {p['pool']}", "size": p["gold_rows"], "macro_f1": p["student"]})
        for method, key in ((GOLD_ONLY, "gold_only"), (TEACHER, "teacher")):
            if not any(o["method"] == method and o["size"] == p["gold_rows"] for o in out):
                out.append({"method": method, "size": p["gold_rows"], "macro_f1": p[key]})
    return out


def few_gold_section(cfg: CourseConfig, splits, out_dir: Path, progress: bool = True,
                     recorded_file: Path | None = None) -> dict:
    """The few-gold regime as notebook 06 shows it: trained on this run where `cfg.distill_few` is "live"
    (`few_gold_regime`), else the figures `make bench PARTS=distill-few` recorded (`recorded_file`, default
    `RECORDED_FEW`): the points of `cfg.seed`'s run (else the first seed's) and the rows over every seed. Returns
    {"source": a sentence that says which, "points", "pools", "seed", "rows": over the seeds, or None when live}."""
    if cfg.distill_few == "live":
        regime = few_gold_regime(cfg, splits, Path(out_dir) / "few_gold", progress)
        return {"source": f"Live: this run trains the regime itself (seed {cfg.seed}).", "seed": cfg.seed,
                "rows": None, **regime}
    path = Path(recorded_file or RECORDED_FEW)
    if not path.is_file():
        raise RunError(f"No recorded few-gold figures at {path}: {RECORDED_FEW_COMMAND} writes them, or set "
                       f"distill_few='live' to train them here.")
    recorded = json.loads(path.read_text(encoding="utf-8"))
    run = next((r for r in recorded["runs"] if r["seed"] == cfg.seed), recorded["runs"][0])
    trainings = len({p["gold_rows"] for p in run["points"]}) * (1 + len(run["pools"]))
    source = (f"Recorded, not run here: `{recorded['command']}` measured this on {recorded['date'][:10]} "
              f"({recorded['cpus']} cores, the {recorded['profile']} profile, seeds "
              f"{', '.join(str(r['seed']) for r in recorded['runs'])} on one split, the teacher the fine-tuned LLM of "
              f"one course run). The curves are seed {run['seed']}'s; the table is over the seeds. It trains "
              f"{trainings} MiniLM models per seed: set overrides={{'distill_few': 'live'}} to run it here.")
    return {"source": source, "points": run["points"], "pools": run["pools"], "seed": run["seed"],
            "rows": recorded["rows"]}


def outcome_counts(outcomes: list[str]) -> str:
    """Each seed's verdict, counted: "ahead 3/3", or "ahead 2/3, tied 1/3"."""
    return ", ".join(f"{o} {n}/{len(outcomes)}" for o, n in Counter(outcomes).most_common())


def few_gold_table(rows: list[dict], domain: str = "test") -> pd.DataFrame:
    """The regime over the seeds in `domain` (`rows` of `bench.few_gold_over_seeds`): per pool and gold size the
    student's and MiniLM alone's macro-F1 (mean ± sample sd), the teacher's mean, and each seed's verdict counted."""
    out = [{"pool": r["pool"], "gold rows": r["gold_rows"],
            "student": f"{r['student']['mean']:.3f} ± {r['student']['sd']:.3f}",
            "MiniLM alone": f"{r['gold_only']['mean']:.3f} ± {r['gold_only']['sd']:.3f}",
            "teacher": f"{r['teacher']['mean']:.3f}",
            "student vs MiniLM alone": outcome_counts(r["vs_gold_only"]),
            "student vs teacher": outcome_counts(r["vs_teacher"])} for r in rows if r["domain"] == domain]
    return pd.DataFrame(out).set_index(["pool", "gold rows"])


def few_gold_seeds_sentence(rows: list[dict], domain: str = "test") -> str:
    """Per pool in `domain`, over the seeds: at which gold sizes the paired bootstrap puts the student ahead of MiniLM
    alone in every seed, and at which it ties (or beats) its teacher in every seed."""
    said = []
    for pool in dict.fromkeys(r["pool"] for r in rows if r["domain"] == domain):
        mine = sorted((r for r in rows if r["pool"] == pool and r["domain"] == domain), key=lambda r: r["gold_rows"])
        seeds = len(mine[0]["vs_gold_only"])
        every = lambda key, ok: [r["gold_rows"] for r in mine if all(o in ok for o in r[key])]
        ahead, level = every("vs_gold_only", ("ahead",)), every("vs_teacher", ("tied", "ahead"))
        sizes = lambda found: ("at every gold size" if len(found) == len(mine) else
                               "at no gold size" if not found else f"at {', '.join(map(str, found))} gold rows only")
        said.append(f"Pool {pool}, over {seeds} seeds: the student is ahead of MiniLM alone beyond the noise (the "
                    f"paired bootstrap's 95 % interval clear of zero) in every seed {sizes(ahead)}, and level with "
                    f"its teacher (tied or ahead) in every seed {sizes(level)}.")
    return " ".join(said)


def domain_name(cfg: CourseConfig, domain: str) -> str:
    return f"out of domain ({cfg.ood_dataset})" if domain == "ood" else "in domain (the test split)"


def few_gold_text(cfg: CourseConfig, few: dict, source: bool = True) -> str:
    """`few_gold_section` as text: where it comes from (unless not `source`), each domain's sentence, and the table
    over the seeds where recorded."""
    domains = list(dict.fromkeys(p["domain"] for p in few["points"]))
    parts = [few["source"]] * source + [f"{domain_name(cfg, d)[0].upper()}{domain_name(cfg, d)[1:]}: "
                                        f"{few_gold_sentence(few['points'], d)}" for d in domains]
    for d in domains if few["rows"] else ():
        parts += [f"Over the seeds, {domain_name(cfg, d)}: {few_gold_seeds_sentence(few['rows'], d)}",
                  few_gold_table(few["rows"], d).to_string()]
    return "\n\n".join(parts)

