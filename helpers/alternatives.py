"""Does the fine-tuned LLM earn its cost? The methods a practitioner would pick instead, on the same split (notebook 05).

Every method becomes a `predict(texts)` callable that returns class probabilities (or labels, for rules), so each is
scored the same way on the in-domain test split and on an out-of-domain set it never trained on. Around them: the
human ceiling (one rater against the mean of the others), a learning curve, and verdict sentences built from the
numbers only, each win called by `helpers.evaluate.verdict`'s paired bootstrap.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import encoder
from helpers.baselines import fit_majority_class, fit_tfidf_logreg, vader_fits, vader_predict
from helpers.config import CourseConfig
from helpers.data import (HUTTO_CORPORA, DataError, balanced_sample, load_dataset, load_rater_ratings, rating_to_label,
                          to_chat_records)
from helpers.evaluate import classification_metrics, macro_f1_rows, verdict
from helpers.fewshot import training_rows
from helpers.model import resolve_model
from helpers.predict import hf_predictor, load_predictor
from helpers.runs import ALTERNATIVES as NOTEBOOK_05
from helpers.runs import FEWSHOT, TRAINING, RunError, chapter_metrics, disk_mb, layout
from helpers.training import scoring_callback, train_fresh

SUMMARY_KEYS = ("n", "accuracy", "macro_f1", "invalid_rate", "per_class", "confusion")
# The methods compared (and on the learning curve), by the name their whole-split row has in the comparison table.
TFIDF, FROZEN, SETFIT = ("TF-IDF + logistic regression", "MiniLM frozen embeddings + logistic regression",
                         "SetFit (MiniLM)")
ENCODER, LLM = "MiniLM fine-tuned end to end", "fine-tuned LLM, HF fp32 (LoRA, merged)"
LLM_Q4 = "fine-tuned LLM, GGUF Q4_K_M"


# --- the human ceiling ----------------------------------------------------------------------------------------------

def rater_ratings(dataset: str) -> dict[str, list[int]] | None:
    """Every rater's rating per snippet id for VADER's rated corpora ("amazon", "hutto:<corpus>"); None for other data."""
    corpus = dataset[6:] if dataset.startswith("hutto:") else dataset
    return load_rater_ratings(corpus) if corpus in HUTTO_CORPORA else None


def human_agreement(df: pd.DataFrame, ratings: dict, labels, threshold: float, draws: int, seed: int) -> dict:
    """One human rater against the mean of the remaining raters, on the snippets of `df` (matched by its `id` column).

    Each draw picks one rater at random per snippet; that rating and the mean of the others are both thresholded like
    the gold labels, and scored like a model. Returns the mean and standard deviation over `draws` of accuracy and
    macro-F1, and how many snippets had at least two ratings."""
    rated = [ratings[i] for i in df["id"] if i in ratings and len(ratings[i]) >= 2] if "id" in df else []
    if not rated:
        raise DataError("No snippet of this set has two or more individual ratings: a human ceiling needs them.")
    rng = np.random.default_rng(seed)
    one, rest = np.empty((draws, len(rated)), dtype=object), np.empty((draws, len(rated)), dtype=object)
    for j, values in enumerate(rated):
        for d, k in enumerate(rng.integers(len(values), size=draws)):  # one rater per snippet and draw
            one[d, j] = rating_to_label(values[k], threshold)
            rest[d, j] = rating_to_label((sum(values) - values[k]) / (len(values) - 1), threshold)
    scores = {"accuracy": (one == rest).mean(1), "macro_f1": macro_f1_rows(rest, one, labels)}
    return {"n": len(rated), "draws": draws, **{f"{k}_mean": float(v.mean()) for k, v in scores.items()},
            **{f"{k}_sd": float(v.std()) for k, v in scores.items()}}


# --- out of domain --------------------------------------------------------------------------------------------------

def out_of_domain_set(cfg: CourseConfig) -> pd.DataFrame | None:
    """`cfg.ood_size` balanced rows of `cfg.ood_dataset` (thresholded like the default data), or None when it is off
    or its negative/neutral/positive labels do not fit the configured ones."""
    if not cfg.ood_dataset or not vader_fits(cfg.labels):
        return None
    df = load_dataset(dataclasses.replace(cfg, dataset=cfg.ood_dataset))
    return balanced_sample(df, cfg.ood_size, cfg.labels, cfg.seed, cfg.min_per_class, source=cfg.ood_dataset)


# --- scoring any method the same way --------------------------------------------------------------------------------

def score(predict, df: pd.DataFrame, labels) -> dict:
    """Metrics of `predict` (texts -> probabilities in label order, or labels) on `df`, with reviews per second and
    the predictions."""
    start = time.perf_counter()
    out = predict(list(df["text"]))
    seconds = time.perf_counter() - start
    predictions = [labels[i] for i in np.asarray(out).argmax(1)] if np.ndim(out) == 2 else list(out)
    metrics = classification_metrics(df["label"], predictions, labels)
    return {**{k: metrics[k] for k in SUMMARY_KEYS}, "reviews_per_second": len(df) / max(seconds, 1e-9),
            "predictions": predictions}


def timed_fit(fit, *args, **kwargs):
    """(what `fit(*args, **kwargs)` returns, the seconds it took)."""
    start = time.perf_counter()
    out = fit(*args, **kwargs)
    return out, time.perf_counter() - start


def method_row(method: str, kind: str, metrics: dict, train_seconds: float | None, size_mb: float | None,
               n_train: int | None) -> dict:
    """One row of the comparison table: a method's scores beside what it cost."""
    speed = metrics.get("reviews_per_second")
    return {**metrics, "method": method, "kind": kind, "train_seconds": train_seconds, "size_mb": size_mb,
            "n_train": n_train, "serve_seconds": 1000 / speed if speed else None}


class Comparison:
    """Every method scored the same way on every domain ("test": the in-domain test split, "ood": out of domain).
    `rows[domain]` holds one row per method, with its predictions, for the table, the figures and the verdicts."""

    def __init__(self, domains: dict[str, pd.DataFrame], labels):
        self.domains, self.labels = domains, tuple(labels)
        self.rows = {name: [] for name in domains}

    def add(self, method: str, kind: str, load, train_seconds: float | None = None, size_mb: float | None = None,
            n_train: int | None = None, known: dict | None = None) -> dict:
        """Score `load()` (a zero-argument function that returns `predict(texts)`; called once, only if a domain needs
        it) on every domain, except those in `known` ({domain: metrics measured before}). Returns the rows added."""
        known, predict, added = dict(known or {}), None, {}
        for name, df in self.domains.items():
            if name in known:
                metrics = known[name]
            elif load is None:
                continue
            else:
                predict = predict or load()
                metrics = score(predict, df, self.labels)
            added[name] = method_row(method, kind, metrics, train_seconds, size_mb, n_train)
            self.rows[name].append(added[name])
        return added

    def table(self, domain: str = "test") -> pd.DataFrame:
        """The rows of one domain as a table, best macro-F1 first (serving cost as seconds per 1,000 reviews)."""
        columns = ["method", "kind", "accuracy", "macro_f1", "train_seconds", "reviews_per_second", "size_mb",
                   "n_train"]
        frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in self.rows[domain]], columns=columns)
        return frame.sort_values("macro_f1", ascending=False).set_index("method")

    def summary(self) -> dict:
        """The rows without per-review lists, for the metrics file."""
        return {name: [{k: v for k, v in r.items() if k not in ("predictions", "per_class")} for r in rows]
                for name, rows in self.rows.items()}


def run_llm_rows(cfg: CourseConfig, n_train: int) -> list[dict]:
    """What notebooks 02 and 04 measured on this test split, as `Comparison.add` arguments with the model file each
    came from (nothing is re-run here; a notebook not yet run adds no row)."""
    run = layout(cfg)
    m02, m04 = run.metrics(TRAINING), run.metrics(FEWSHOT)
    out = []
    if m02:
        tuned = {**m02["fine_tuned"], "n": len(m02["test_labels"]), "predictions": m02["test_predictions"]}
        out.append(dict(method="fine-tuned LLM, HF fp32 (LoRA, merged)", kind="fine-tuned LLM", model=run.merged,
                        train_seconds=m02["train_seconds"], size_mb=m02["artifact_mb"]["merged"], n_train=n_train,
                        known={"test": tuned}))
    if m02 and "zero_shot" in m02:  # the notebook scores the base model first; the `train` command does not
        base = {**m02["zero_shot"], "n": len(m02["test_labels"]), "predictions": training_rows(cfg)[0]["predictions"]}
        out.append(dict(method="base LLM 0-shot (HF label scoring)", kind="LLM", model=Path(resolve_model(cfg)),
                        train_seconds=0.0, size_mb=None, n_train=0, known={"test": base}))
    for r in (m04 or {}).get("results", []):
        if r["method"].startswith("fine-tuned 0-shot (GGUF"):
            out.append(dict(method=LLM_Q4, kind="fine-tuned LLM", known={"test": r},
                            model=run.gguf("Q4_K_M"), size_mb=r.get("size_mb"),
                            train_seconds=m02["train_seconds"] if m02 else None, n_train=n_train))
        elif r["method"].startswith("base") and "shot (GGUF" in r["method"]:
            out.append(dict(method=f"base LLM {r['method'][5:]}", kind="LLM", model=None, known={"test": r},
                            train_seconds=0.0, size_mb=None, n_train=0))
    return out


# --- the methods, each added to a comparison as notebook 05 and its command add them --------------------------------

def human_ceilings(cfg: CourseConfig, domains: dict[str, tuple]) -> dict:
    """{domain: human_agreement(...)} for each {domain: (frame, data set name)} whose data set has individual ratings
    (the others get no human row)."""
    out = {}
    for name, (df, dataset) in domains.items():
        ratings = rater_ratings(dataset) if df is not None else None
        if ratings:
            out[name] = human_agreement(df, ratings, cfg.labels, cfg.rating_threshold, cfg.human_draws, cfg.seed)
    return out


def add_llm_rows(comparison: Comparison, cfg: CourseConfig, n_train: int) -> list[str]:
    """The LLM rows notebooks 02-04 measured (`run_llm_rows`), each model also scored on the other domains."""
    rows = run_llm_rows(cfg, n_train)
    for row in rows:
        model = row.pop("model")
        comparison.add(**row, load=(lambda m=model: load_predictor(cfg, m).probabilities) if model else None)
    return [row["method"] for row in rows]


def add_classic_rows(comparison: Comparison, cfg: CourseConfig, train: pd.DataFrame) -> None:
    """TF-IDF + logistic regression and the majority class (fitted on `train`), and VADER's rules where its three
    answers fit the labels."""
    tfidf, seconds = timed_fit(fit_tfidf_logreg, train, cfg.labels, cfg.seed)
    comparison.add(TFIDF, "classic", lambda: tfidf, seconds, None, len(train))
    if vader_fits(cfg.labels):
        comparison.add("VADER (rules, no training)", "classic", lambda: vader_predict, 0.0, None, 0)
    majority, seconds = timed_fit(fit_majority_class, train, cfg.labels)
    comparison.add("majority class", "classic", lambda: majority, seconds, None, len(train))


def add_frozen_row(comparison: Comparison, cfg: CourseConfig, train: pd.DataFrame) -> dict:
    """The encoder's frozen sentence embeddings with a logistic regression on top."""
    frozen, seconds = timed_fit(encoder.fit_frozen_logreg, cfg, train)
    return comparison.add(FROZEN, "encoder", lambda: frozen, seconds, disk_mb(encoder.prepare_encoder(cfg)), len(train))


def add_setfit_row(comparison: Comparison, per_class: int, setfit: dict) -> dict:
    """A trained SetFit model (`encoder.finished_setfit`'s dict) at `per_class` examples per class: the rows added."""
    return comparison.add(f"{SETFIT}, {per_class} per class", "encoder", lambda: setfit["predict"],
                          setfit["fit_seconds"], setfit["size_mb"], setfit["n_train"])


def add_setfit_rows(comparison: Comparison, cfg: CourseConfig, train: pd.DataFrame, out_dir: Path) -> dict:
    """SetFit at each of `cfg.setfit_per_class` examples per class: {per class: (fit seconds, rows added)}."""
    out = {}
    for per_class in cfg.setfit_per_class:
        setfit = encoder.train_setfit(cfg, train, per_class, Path(out_dir) / f"setfit_{per_class}")
        out[per_class] = setfit["fit_seconds"], add_setfit_row(comparison, per_class, setfit)
    return out


def add_encoder_row(comparison: Comparison, cfg: CourseConfig, train: pd.DataFrame, out_dir: Path,
                    progress: bool = True, method: str = ENCODER, tuned: dict | None = None) -> dict:
    """The encoder fine-tuned end to end on `train` (its row named `method`): `tuned` where it was trained already
    (notebook 05's take-home cells, `encoder.finished_encoder`), else trained here into `<out_dir>/encoder`. Returns
    `encoder.finished_encoder`'s dict (with its log history)."""
    tuned = tuned or encoder.finetune_encoder(cfg, train, Path(out_dir) / "encoder", progress=progress)
    comparison.add(method, "encoder", lambda: tuned["predict"], tuned["train_seconds"], tuned["size_mb"], len(train))
    return tuned


# --- the learning curve ---------------------------------------------------------------------------------------------

def curve_subsets(cfg: CourseConfig, train_df: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """{size: balanced subset of the training split} for every learning-curve size, the whole split included."""
    sizes = sorted({s for s in cfg.learning_curve_sizes if s < len(train_df)} | {len(train_df)})
    return {size: balanced_sample(train_df, size, cfg.labels, cfg.seed, min_per_class=1, source="learning curve")
            for size in sizes}


def llm_curve_points(cfg: CourseConfig, rows: int) -> tuple[int, tuple]:
    """(steps, the steps scored on the eval split) of the LLM at one learning-curve size: the longer of one epoch of
    `rows` and `cfg.learning_curve_llm_steps`, scored before training (the zero-shot model) and at
    `cfg.learning_curve_llm_points` evenly spaced steps up to the end."""
    steps = max(cfg.learning_curve_llm_steps, -(-rows // cfg.batch_size))
    n = max(1, cfg.learning_curve_llm_points)
    return steps, (0, *sorted({round(steps * (i + 1) / n) for i in range(n)}))


def fit_llm_adapter(cfg: CourseConfig, subset: pd.DataFrame, eval_df: pd.DataFrame, out_dir: Path,
                    progress: bool = False, chosen: dict | None = None):
    """A fresh LoRA adapter on `subset` with its budget chosen on the eval split, as a practitioner would: trained at
    the course's rate and schedule for `llm_curve_points`' steps, scored on `eval_df` before training and at each
    point, and the adapter of the best eval macro-F1 kept (its first best: the fewest steps; the untrained adapter
    where nothing beat the zero-shot model), merged. `chosen` (a dict) gets the step, the eval macro-F1 of every
    point and the training time without the scoring. Returns `predict(texts)` by label scoring."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    steps, points = llm_curve_points(cfg, len(subset))
    best = {"macro_f1": -1.0}

    def score(model, tokenizer):
        f1 = hf_predictor(model, tokenizer, cfg).evaluate(eval_df, progress=False)["macro_f1"]
        if f1 > best["macro_f1"]:
            best.update(macro_f1=f1, state={k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()})
        return f1

    scoring = scoring_callback(points, score)
    trainer, run = train_fresh(dataclasses.replace(cfg, max_steps=steps), to_chat_records(subset, cfg),
                               Path(out_dir) / f"curve_llm_{len(subset)}", progress=progress, callbacks=[scoring])
    set_peft_model_state_dict(trainer.model, best["state"])
    step = next(s for s, f1 in scoring.scores.items() if f1 == best["macro_f1"])
    if chosen is not None:
        chosen.update(step=step, steps=steps, eval_macro_f1=scoring.scores, eval_rows=len(eval_df),
                      train_seconds=run["train_seconds"] - scoring.seconds)
    model, tokenizer = trainer.model.merge_and_unload(), trainer.processing_class
    return lambda texts: hf_predictor(model, tokenizer, cfg).probabilities(texts, progress)


def known_curve_points(rows: list[dict]) -> list[dict]:
    """Learning-curve points already measured for the comparison table (each method at its training size)."""
    return [curve_point(name, r["n_train"], r, r["train_seconds"], reused=True) for r in rows
            for name in (TFIDF, FROZEN, SETFIT, ENCODER, LLM) if r["method"].startswith(name) and r["n_train"]]


def learning_curve(cfg: CourseConfig, train_df: pd.DataFrame, test_df: pd.DataFrame, known: list[dict],
                   out_dir: Path, progress: bool = False,
                   methods: tuple = (TFIDF, FROZEN, ENCODER, LLM), eval_df: pd.DataFrame | None = None) -> list[dict]:
    """Macro-F1 on `test_df` of each method trained on balanced subsets of the training split (`curve_subsets`).
    TF-IDF, the frozen encoder and the fine-tuned encoder train at every size; the LLM at
    `cfg.learning_curve_llm_sizes` only (it costs the most), with its budget chosen on `eval_df` at each size
    (`fit_llm_adapter`; the point keeps the choice as `budget`); SetFit only at its own few-shot sizes. `known`
    points (see `known_curve_points`) are kept and not retrained; `methods` picks which of the four are trained."""
    points = list(known)
    fits = {TFIDF: lambda subset, size, chosen: fit_tfidf_logreg(subset, cfg.labels, cfg.seed),
            FROZEN: lambda subset, size, chosen: encoder.fit_frozen_logreg(cfg, subset),
            ENCODER: lambda subset, size, chosen: encoder.finetune_encoder(
                cfg, subset, Path(out_dir) / f"curve_encoder_{size}", progress=progress)["predict"],
            LLM: lambda subset, size, chosen: fit_llm_adapter(cfg, subset, eval_df, out_dir, progress, chosen)}
    for size, subset in curve_subsets(cfg, train_df).items():
        for method, fit in ((m, fit) for m, fit in fits.items() if m in methods):
            if (method, size) in {(p["method"], p["size"]) for p in points}:
                continue
            if method == LLM and size not in cfg.learning_curve_llm_sizes:
                continue
            if method == LLM and eval_df is None:
                raise ValueError("The LLM's budget at each learning-curve size is chosen on the eval split: pass "
                                 "eval_df=splits.eval.")
            chosen = {}
            predict, seconds = timed_fit(fit, subset, size, chosen)
            point = curve_point(method, size, score(predict, test_df, cfg.labels), chosen.get("train_seconds", seconds))
            points.append({**point, "budget": chosen} if chosen else point)
    return sorted(points, key=lambda p: (p["method"], p["size"]))


def curve_point(method: str, size: int, metrics: dict, train_seconds: float | None, reused: bool = False) -> dict:
    return {"method": method, "size": size, "macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
            "train_seconds": train_seconds, "reused": reused, "predictions": metrics.get("predictions")}


# --- verdicts -------------------------------------------------------------------------------------------------------

def best(rows: list[dict], kinds: tuple) -> dict | None:
    """The row of the highest macro-F1 among the rows of these kinds that carry predictions."""
    rows = [r for r in rows if r["kind"] in kinds and r.get("predictions") is not None]
    return max(rows, key=lambda r: r["macro_f1"], default=None)


ALTERNATIVES = ("encoder", "classic")


def llm_vs_alternatives(gold, rows: list[dict], labels, what: str, seed: int) -> dict | None:
    """The best fine-tuned LLM row against the best alternative (encoder, SetFit, classic), on the same items."""
    llm, rival = best(rows, ("fine-tuned LLM",)), best(rows, ALTERNATIVES)
    if llm is None or rival is None:
        return None
    test = verdict(gold, llm, rival, labels, seed)
    return {**test, "sentence": f"{what}: {test['sentence']}"}


def cheapest_within_noise(gold, rows: list[dict], labels, cost: str, seed: int) -> str:
    """The method with the lowest `cost` ("train_seconds", or "serve_seconds" per 1,000 reviews) whose macro-F1 is
    tied with the best method's, by the paired bootstrap."""
    scored = [r for r in rows if r.get("predictions") is not None and r.get(cost) is not None]
    top = max(scored, key=lambda r: r["macro_f1"])
    tied = [r for r in scored if r is top or verdict(gold, r, top, labels, seed)["outcome"] != "behind"]
    cheap = min(tied, key=lambda r: r[cost])
    unit = "s of training" if cost == "train_seconds" else "s per 1,000 reviews served"
    if cheap is top:
        others = "; ".join(f"{r['method']}, {r[cost]:.1f}" for r in tied if r is not top) or "none"
        return (f"Per {'second of training' if cost == 'train_seconds' else 'review served'}: the best method, "
                f"{top['method']} ({top['macro_f1']:.3f}, {top[cost]:.1f} {unit}), is also the cheapest of those tied "
                f"with it (others tied: {others}).")
    return (f"Per {'second of training' if cost == 'train_seconds' else 'review served'}: {cheap['method']} "
            f"({cheap['macro_f1']:.3f} macro-F1, {cheap[cost]:.1f} {unit}) is tied with the best, {top['method']} "
            f"({top['macro_f1']:.3f}, {top[cost]:.1f} {unit}), at {top[cost] / max(cheap[cost], 1e-9):.0f}x less cost.")


def little_data_sentence(curve: list[dict], human: dict | None, gold, labels, seed: int) -> str:
    """At the smallest training size that the LLM was trained at: the fine-tuned LLM against the best other method
    there, by the paired bootstrap over the test reviews (`gold`)."""
    llm_sizes = sorted(p["size"] for p in curve if p["method"].startswith("fine-tuned LLM"))
    if not llm_sizes:
        return "Little data: no LLM point on the learning curve in this profile."
    size = llm_sizes[0]
    at = [p for p in curve if p["size"] == size and p.get("predictions") is not None]
    llm = next(p for p in at if p["method"].startswith("fine-tuned LLM"))
    rival = max((p for p in at if p is not llm), key=lambda p: p["macro_f1"], default=None)
    ceiling = f"; one human rater reaches {human['macro_f1_mean']:.3f}" if human else ""
    if rival is None:
        return f"With little data ({size} examples): the fine-tuned LLM reaches {llm['macro_f1']:.3f} macro-F1{ceiling}."
    return f"With little data ({size} examples): {verdict(gold, llm, rival, labels, seed)['sentence'][:-1]}{ceiling}."


def when_to_fine_tune(in_domain: dict | None, out_of_domain: dict | None) -> str:
    """The closing advice, chosen by what the two comparisons (`llm_vs_alternatives`) found, with the paired
    bootstrap's figures it rests on."""
    return _advice(in_domain, out_of_domain) + _noise(in_domain, out_of_domain)


def _advice(in_domain: dict | None, out_of_domain: dict | None) -> str:
    """The advice sentence from two `evaluate.verdict` results (paired bootstrap): "beats" only where a verdict has a
    winner, i.e. its 95 % interval excludes 0; `when_to_fine_tune` appends those intervals (`_noise`)."""
    def won(test):
        return test is not None and test["winner"] is not None and test["winner"].startswith("fine-tuned LLM")

    def lost(test):
        return test is not None and test["winner"] is not None and not test["winner"].startswith("fine-tuned LLM")

    if won(in_domain) and won(out_of_domain):
        return ("On this data the fine-tuned LLM earns its cost: it beats every alternative in domain and out of "
                "domain beyond the test set's noise.")
    if won(out_of_domain):
        return ("Fine-tune an LLM here when your inputs will drift from your training data: in domain a cheaper "
                "model does as well, out of domain the LLM's pre-training carries it further.")
    if won(in_domain):
        return ("The fine-tuned LLM wins in domain but not out of domain: worth it when tomorrow's reviews look like "
                "today's training data.")
    if lost(in_domain) or lost(out_of_domain):
        return ("On this data a cheaper model is the right tool: the fine-tuned LLM loses to it beyond the test "
                "set's noise. Reach for an LLM when you need its generation, its instructions or a longer context.")
    return ("On this data the fine-tuned LLM ties the best cheap alternative: pick the cheaper one unless you need "
            "what only the LLM gives (generation, instructions, one model for many tasks).")


def _noise(in_domain: dict | None, out_of_domain: dict | None) -> str:
    """The fine-tuned LLM minus the best alternative in each domain compared, with its 95 % interval."""
    said = [f"{where} {test['interval']}" for where, test in (("in domain", in_domain), ("out of domain", out_of_domain))
            if test is not None]
    return f" (Fine-tuned LLM minus the best alternative, macro-F1: {'; '.join(said)}.)" if said else ""


def ceiling_sentence(rows: list[dict], human: dict | None, where: str) -> str:
    """The best model of a domain against one human rater's agreement with the others."""
    top = max(rows, key=lambda r: r["macro_f1"])
    if not human:
        return f"{where}: no individual ratings for this data, so no human ceiling; the best model is {top['method']}."
    gap = top["macro_f1"] - human["macro_f1_mean"]
    side = "above" if gap > human["macro_f1_sd"] else "below" if gap < -human["macro_f1_sd"] else "level with"
    return (f"{where}: the best model, {top['method']} ({top['macro_f1']:.3f} macro-F1), is {side} one human rater "
            f"against the others ({human['macro_f1_mean']:.3f} ± {human['macro_f1_sd']:.3f}).")


def central_tests(comparison: Comparison, seed: int) -> dict[str, dict]:
    """The course's central comparison in each domain ("test", "ood"): the best fine-tuned LLM against the best
    alternative (`llm_vs_alternatives`), with the two methods and their macro-F1 beside the bootstrap's figures.
    Notebook 05 records it; `make bench PARTS=laptop` compares it across two settings of one machine."""
    tests = {}
    for name, what in (("test", "In domain"), ("ood", "Out of domain")):
        if name not in comparison.rows:
            continue
        gold = list(comparison.domains[name]["label"])
        test = llm_vs_alternatives(gold, comparison.rows[name], comparison.labels, what, seed)
        if test is not None:
            llm, rival = best(comparison.rows[name], ("fine-tuned LLM",)), best(comparison.rows[name], ALTERNATIVES)
            tests[name] = {**test, "llm": llm["method"], "llm_macro_f1": llm["macro_f1"], "rival": rival["method"],
                           "rival_macro_f1": rival["macro_f1"], "n": len(gold)}
    return tests


def verdicts(comparison: Comparison, curve: list[dict] | None, humans: dict, seed: int) -> dict[str, str]:
    """Every conclusion of notebook 05 as a sentence computed from the numbers; with `curve` None (the learning curve
    not drawn yet: it sits under the notebook's "Going further"), all but the little-data sentence."""
    gold = {name: list(df["label"]) for name, df in comparison.domains.items()}
    labels, rows = comparison.labels, comparison.rows
    tests = central_tests(comparison, seed)
    out = {f"{name}_llm_vs_alternatives": t["sentence"] for name, t in tests.items() if t}
    out.update({f"{name}_ceiling": ceiling_sentence(rows[name], humans.get(name), where)
                for name, where in (("test", "In domain"), ("ood", "Out of domain")) if rows.get(name)})
    if curve is not None:
        out["little_data"] = little_data_sentence(curve, humans.get("test"), gold["test"], labels, seed)
    for cost in ("train_seconds", "serve_seconds"):
        out[f"per_{cost}"] = cheapest_within_noise(gold["test"], rows["test"], labels, cost, seed)
    out["advice"] = when_to_fine_tune(tests.get("test"), tests.get("ood"))
    return out


# --- the worked solutions of the chapter's exercises (notebooks/solutions/05_practitioners_alternatives.ipynb) -------

def kept_encoder_models(cfg: CourseConfig) -> dict[str, Path]:
    """{method: folder} of the trained encoders notebook 05 keeps in the run folder: SetFit at each of
    `cfg.setfit_per_class` and the encoder fine-tuned end to end (its learning-curve models are caches, not kept)."""
    folder = layout(cfg).folder(NOTEBOOK_05)
    models = {**{f"{SETFIT}, {k} per class": folder / f"setfit_{k}" for k in cfg.setfit_per_class},
              ENCODER: folder / "encoder"}
    return {method: path for method, path in models.items() if path.is_dir()}


def add_kept_encoder_rows(comparison: Comparison, cfg: CourseConfig, methods: tuple | None = None) -> list[str]:
    """The encoders notebook 05 kept (`kept_encoder_models`; `methods` picks some), loaded as they are and scored on
    every domain, with the training seconds, size and rows that notebook recorded. Returns the methods added."""
    recorded = {r["method"]: r for r in chapter_metrics(cfg, NOTEBOOK_05)["results"]["test"]}
    added = []
    for method, path in kept_encoder_models(cfg).items():
        if methods is None or method in methods:
            row = recorded.get(method, {})
            comparison.add(method, "encoder", lambda p=path: load_predictor(cfg, p).probabilities,
                           row.get("train_seconds"), row.get("size_mb") or disk_mb(path), row.get("n_train"))
            added.append(method)
    return added


def score_without_retraining(cfg: CourseConfig, train: pd.DataFrame,
                             domains: dict[str, pd.DataFrame]) -> tuple[Comparison, dict[str, str]]:
    """Notebook 05's methods on `domains`, retraining nothing the run folder keeps: notebook 02's merged LLM, 03's
    GGUF file and 05's encoder and SetFit folders are loaded and scored; the base LLM and VADER need no training;
    TF-IDF, the majority class and the frozen-embedding regression are not kept, so they are refitted on `train`
    (seconds each, as notebook 05 itself does). Returns the comparison and {method: how its row was made}."""
    comparison, run = Comparison(domains, cfg.labels), layout(cfg)
    add_llm_rows(comparison, cfg, len(train))
    add_kept_encoder_rows(comparison, cfg)
    add_classic_rows(comparison, cfg, train)
    add_frozen_row(comparison, cfg, train)
    kept = {LLM: run.merged, LLM_Q4: run.gguf("Q4_K_M"), **kept_encoder_models(cfg)}
    how = {r["method"]: f"kept, loaded from {kept[r['method']]}" if r["method"] in kept else
           "no training" if r["n_train"] == 0 else f"refitted on the {len(train)} training rows (not kept)"
           for r in next(iter(comparison.rows.values()))}
    return comparison, how


def family(method: str) -> str:
    """The method a row belongs to, without its format or size: "fine-tuned LLM, GGUF Q4_K_M" -> "fine-tuned LLM"."""
    return method.split(",")[0]


def travels_best(gold, rows: list[dict], labels, seed: int, where: str) -> dict:
    """The best row of a domain against the best row of another method (`family`: the same model in another format
    or at another size is not its rival), by the paired bootstrap. Returns the ranking (method, macro-F1), the two
    rows' names, the verdict's interval and outcome, and the sentence."""
    ranked = sorted((r for r in rows if r.get("predictions") is not None), key=lambda r: -r["macro_f1"])
    out = {"ranking": [(r["method"], r["macro_f1"]) for r in ranked]}
    if not ranked:
        return {**out, "sentence": f"No method was scored on {where}."}
    top = ranked[0]
    rival = next((r for r in ranked if family(r["method"]) != family(top["method"])), None)
    if rival is None:
        return {**out, "best": top["method"], "sentence": f"{top['method']} travels best to {where} "
                                                          f"({top['macro_f1']:.3f} macro-F1): it has no rival."}
    test = verdict(gold, top, rival, labels, seed, where)
    said = ("ahead of the best other method outside the noise" if test["outcome"] == "ahead" else
            "but not ahead of the best other method outside the noise")
    return {**out, "best": top["method"], "runner_up": rival["method"], "outcome": test["outcome"],
            "interval": test["interval"],
            "sentence": f"{top['method']} travels best to {where} ({top['macro_f1']:.3f} macro-F1), {said}: "
                        f"{test['sentence']}"}


def encoder_epochs_sentence(gold, rows: list[dict], epochs: tuple[int, int], labels, seed: int) -> dict:
    """Exercise 1: the encoder fine-tuned for `epochs[1]` epochs (its row named "<ENCODER>, <n> epochs") against the
    best fine-tuned LLM and against the chapter's encoder (`epochs[0]`, the row named ENCODER), by the paired
    bootstrap, with what each cost in training seconds. Returns the figures and the sentence."""
    short, long = epochs
    chapter = next(r for r in rows if r["method"] == ENCODER)
    longer = next(r for r in rows if r["method"] == f"{ENCODER}, {long} epochs")
    llm = best(rows, ("fine-tuned LLM",))
    if llm is None:
        raise RunError("No fine-tuned LLM row with test predictions: run notebook 02 (02_logged_training) first in "
                       "this run folder, or start from a finished run (overrides={\"from_run\": ...}).")
    before = verdict(gold, chapter, llm, labels, seed)["outcome"]
    after, against_short = verdict(gold, longer, llm, labels, seed), verdict(gold, longer, chapter, labels, seed)
    moved = {("ahead", "ahead"): "stays ahead of", ("tied", "ahead"): "pulls ahead of",
             ("behind", "ahead"): "pulls ahead of", ("behind", "tied"): "catches up with",
             ("tied", "tied"): "stays tied with", ("ahead", "tied"): "loses its lead over",
             ("behind", "behind"): "does not catch up with", ("tied", "behind"): "falls behind",
             ("ahead", "behind"): "falls behind"}[before, after["outcome"]]
    was = {"ahead": "ahead of it", "tied": "tied with it", "behind": "behind it"}[before]
    seconds, before_seconds = longer["train_seconds"], chapter.get("train_seconds")
    llm_seconds = llm.get("train_seconds")
    cost = (f"It cost {seconds:.0f} s of training against {before_seconds:.0f} s for {short} epoch{'s' * (short != 1)} "
            f"({seconds / max(before_seconds, 1e-9):.1f}x), and {llm_seconds:.0f} s for the LLM."
            if before_seconds and llm_seconds else f"It cost {seconds:.0f} s of training.")
    sentence = (f"With {long} epochs instead of {short}, the fine-tuned encoder {moved} the fine-tuned LLM (with "
                f"{short} it was {was}): {after['sentence']} {cost} Against its own {short}-epoch run: "
                f"{against_short['sentence']}")
    figures = {"epochs": long, "macro_f1": longer["macro_f1"], "train_seconds": seconds, "chapter_epochs": short,
               "chapter_macro_f1": chapter["macro_f1"], "chapter_train_seconds": before_seconds, "llm": llm["method"],
               "llm_macro_f1": llm["macro_f1"], "llm_train_seconds": llm_seconds,
               "vs_llm": after["interval"], "vs_llm_outcome": after["outcome"], "chapter_vs_llm_outcome": before,
               "vs_chapter_encoder": against_short["interval"], "vs_chapter_encoder_outcome": against_short["outcome"]}
    return {"figures": figures, "sentence": sentence}


def setfit_sizes(train_df: pd.DataFrame, per_class_sizes, labels) -> tuple[tuple, str]:
    """The SetFit sizes (examples per class) the training split can hold: a size above its rarest class's rows is
    capped there. Returns (the sizes, sorted and distinct, and a note that says what was capped; "" if nothing)."""
    counts = train_df["label"].value_counts()
    cap = min(int(counts.get(label, 0)) for label in labels)
    asked = sorted(set(per_class_sizes))
    over = [k for k in asked if k > cap]
    note = "" if not over else (
        f" ({' and '.join(map(str, over))} per class {'is' if len(over) == 1 else 'are'} more than the training split "
        f"holds of its rarest class, {cap} rows: trained at {cap} per class instead.)")
    return tuple(sorted({min(k, cap) for k in asked})), note


def setfit_curve_points(cfg: CourseConfig, train_df: pd.DataFrame, test_df: pd.DataFrame, per_class_sizes,
                        known: list[dict], out_dir: Path) -> list[dict]:
    """SetFit's learning-curve points at each of `per_class_sizes` examples per class: a `known` SetFit point of the
    same training rows is reused, the others are trained (`encoder.train_setfit`) and scored on `test_df`."""
    points = []
    for per_class in per_class_sizes:
        size = per_class * len(cfg.labels)
        old = next((p for p in known if p["method"] == SETFIT and p["size"] == size), None)
        if old is not None:
            points.append({**old, "reused": True})
            continue
        fit = encoder.train_setfit(cfg, train_df, per_class, Path(out_dir) / f"curve_setfit_{per_class}")
        points.append(curve_point(SETFIT, fit["n_train"], score(fit["predict"], test_df, cfg.labels),
                                  fit["fit_seconds"]))
    return points


def crossing_sentence(curve: list[dict], gold, labels, seed: int, note: str = "") -> dict:
    """Where SetFit's learning curve meets the fine-tuned encoder's: at each training size both were trained at, SetFit
    against the encoder by the paired bootstrap. The sentence names the first size at which SetFit is no longer behind
    (tied or ahead) and where the encoder pulls ahead again after it, or says that SetFit stays behind at every size
    tried; then the encoder at its largest size (the whole split), if larger, against SetFit's largest; `note` is
    appended. Returns {"outcomes": {rows: outcome}, "first_reach": rows or None, "sentence"}."""
    setfit, tuned = ({p["size"]: p for p in curve if p["method"] == name and p.get("predictions") is not None}
                     for name in (SETFIT, ENCODER))
    sizes = sorted(set(setfit) & set(tuned))
    if not sizes:
        return {"outcomes": {}, "first_reach": None,
                "sentence": "No training size has both a SetFit and a fine-tuned encoder point: nothing to compare."
                            + note}
    tests = {s: verdict(gold, setfit[s], tuned[s], labels, seed) for s in sizes}
    outcomes = {s: t["outcome"] for s, t in tests.items()}
    reach = next((s for s in sizes if outcomes[s] != "behind"), None)
    span = f"{sizes[0]} to {sizes[-1]} training rows" if len(sizes) > 1 else f"{sizes[0]} training rows"
    if reach is None:
        sentence = (f"SetFit's curve does not reach the fine-tuned encoder's within the sizes tried ({span}): it is "
                    f"behind outside the noise at every one; at the largest, {tests[sizes[-1]]['sentence']}")
    else:
        when = ("already at the smallest size tried," if reach == sizes[0] else
                "first, after trailing at the smaller sizes, at")
        sentence = (f"SetFit's macro-F1 reaches the fine-tuned encoder's {when} {reach // len(labels)} per class "
                    f"({reach} rows): {tests[reach]['sentence']}")
        again = next((s for s in sizes if s > reach and outcomes[s] == "behind"), None)
        if again is not None:
            sentence += f" The encoder pulls ahead again at {again} rows: {tests[again]['sentence']}"
        elif reach != sizes[-1]:
            sentence += f" It stays level or ahead up to the largest size tried ({sizes[-1]} rows)."
    beyond = max((s for s in tuned if s > sizes[-1]), default=None)
    if beyond is not None:  # where the encoder trained on more rows than SetFit ever saw
        sentence += (f" The encoder on {beyond} rows against SetFit on its largest, {sizes[-1]}: "
                     f"{verdict(gold, tuned[beyond], setfit[sizes[-1]], labels, seed)['sentence']}")
    return {"outcomes": outcomes, "first_reach": reach, "sentence": sentence + note}
