"""Notebook 03's experiment: the same fine-tuned model as HF fp32 and as GGUF files, side by side on the same reviews
— size on disk, load time, reviews per second, accuracy, answers changed — and one sentence on the trade-off.

An experiment: it loads every format through `helpers.predict.load_predictor` and sits above the export mechanism
(`helpers.gguf`) that made the files.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.config import CourseConfig
from helpers.evaluate import classification_metrics, verdict
from helpers.gguf import quantize_gguf
from helpers.predict import load_predictor
from helpers.runs import TRAINING, layout, read_decision, write_decision


def compare_formats(cfg: CourseConfig, model_dir: Path, files: dict, test_df, progress: bool = True,
                    known: dict | None = None, with_probabilities: bool = False) -> list[dict]:
    """Size on disk, load time, reviews per second, accuracy and macro-F1 of the HF model and each GGUF file on the
    same reviews by label scoring, and how many answers changed against the HF model. `known`: the HF model's
    label scoring of these reviews already measured (`scored_in_training`): it is loaded to time the load, not
    scored again. `with_probabilities`: each row keeps its label probabilities too (a list per review)."""
    gold, rows = list(test_df["label"]), []
    for name, path in {None: model_dir, **files}.items():
        start = time.perf_counter()
        predictor = load_predictor(cfg, path)
        loaded = time.perf_counter()
        if (name is None and known is not None and known["labels"] == gold
                and (not with_probabilities or known.get("probabilities") is not None)):
            predictions, rps, measured_in = known["predictions"], known["reviews_per_second"], known["measured_in"]
            probabilities = known.get("probabilities")
        else:
            probabilities = predictor.probabilities(test_df["text"], progress=progress)
            predictions = [cfg.labels[i] for i in probabilities.argmax(1)]
            rps, measured_in = len(gold) / max(time.perf_counter() - loaded, 1e-9), "here"
        dtype = str(getattr(predictor.model, "dtype", "")).replace("torch.float32", "fp32").replace("torch.", "")
        rows.append({"format": name or f"HF {dtype}", "size_mb": predictor.size_mb, "load_seconds": loaded - start,
                     "reviews_per_second": rps, "scored_in": measured_in, "predictions": predictions,
                     **_scores(classification_metrics(gold, predictions, cfg.labels))})
        if with_probabilities:
            rows[-1]["probabilities"] = np.asarray(probabilities, dtype=float).tolist()
        del predictor
    for row in rows:
        row["changed_vs_hf"] = sum(a != b for a, b in zip(row["predictions"], rows[0]["predictions"]))
    return rows


def scored_in_training(cfg: CourseConfig) -> dict | None:
    """Notebook 02's label scoring of the merged model on its test split (labels, predictions, reviews per second),
    or None if 02 has not recorded it in this run folder: notebook 03 need not score the same model again."""
    m = layout(cfg).metrics(TRAINING)
    if not m or "test_predictions" not in m:
        return None
    return {"labels": m["test_labels"], "predictions": m["test_predictions"], "measured_in": TRAINING,
            "reviews_per_second": m["fine_tuned"]["reviews_per_second"], "probabilities": m.get("test_probabilities")}


def per_decode(reviews: int) -> str:
    return "one review per decode" if reviews == 1 else f"{reviews} reviews per decode"


def engine_features() -> dict:
    """What each engine computes with on this CPU: the instruction sets llama.cpp was built with (its
    `llama_print_system_info`, as `make setup` chose them for this CPU) and the kernels PyTorch picked."""
    import llama_cpp
    import torch

    info = llama_cpp.llama_print_system_info().decode()
    built = [name.strip() for name, on in (part.split("=", 1) for part in info.split("|") if "=" in part)
             if on.strip() == "1" and name.strip() not in ("LLAMAFILE", "OPENMP", "REPACK")]
    return {"llama.cpp": " ".join(name.split(":")[-1].strip() for name in built),
            "PyTorch": torch.backends.cpu.get_cpu_capability()}


def _scores(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "invalid_rate")}


def format_verdict(rows: list[dict], gold, cfg: CourseConfig, engines: dict | None = None) -> str:
    """One honest sentence on the trade-off between the HF model and Q4_K_M, whatever the numbers say: size and speed
    as measured, and the paired bootstrap over the test reviews (`gold`) on whether quantising cost any macro-F1;
    then which engine is faster on this CPU and what each computes with (`engines`, default: `engine_features`); no
    winner where the HF row's speed was measured in another notebook (`scored_in`), as speeds timed apart do not
    compare on a machine whose speed moves between runs."""
    hf = rows[0]
    q4 = next(r for r in rows if r["format"] == "GGUF Q4_K_M")
    f16 = next((r for r in rows if r["format"] == "GGUF f16"), hf)
    test = verdict(gold, {**q4, "method": "Q4_K_M"}, {**hf, "method": hf["format"]}, cfg.labels, cfg.seed)
    said = {"ahead": "scores above", "tied": "is tied with", "behind": "falls behind"}[test["outcome"]]
    engines = engines or engine_features()
    speed = q4["reviews_per_second"] / hf["reviews_per_second"]
    elsewhere = hf.get("scored_in", "here") != "here"  # timed in another notebook, at another moment
    faster = _faster_engine(hf, speed, elsewhere, engines)
    return (f"Q4_K_M is {q4['size_mb'] / f16['size_mb']:.2f}x the size of f16 ({q4['size_mb']:.0f} vs "
            f"{f16['size_mb']:.0f} MB), classifies {speed:.1f}x as many "
            f"reviews per second as {hf['format']}{' (as timed in ' + hf['scored_in'] + ')' if elsewhere else ''} "
            f"and changed {q4['changed_vs_hf']} of {len(q4['predictions'])} "
            f"answers; on macro-F1 it {said} {hf['format']} ({test['interval']}"
            f"{': the test set cannot tell them apart' if test['tie'] else ''}; accuracy {q4['accuracy'] - hf['accuracy']:+.3f}). "
            f"{faster} with {engines['llama.cpp']}, {per_decode(cfg.gguf_batch_size)} (the instructions "
            f"`make setup` built it for on this CPU; PyTorch picks its kernels, {engines['PyTorch']}, when it runs).")



def _faster_engine(hf: dict, speed: float, elsewhere: bool, engines: dict) -> str:
    """`format_verdict`'s clause on which engine is faster (Q4_K_M's reviews per second ÷ the HF row's: `speed`), up
    to the instructions it names; no winner where the HF row was timed in another notebook (`elsewhere`)."""
    if elsewhere:
        return (f"{hf['format']} was timed in {hf['scored_in']}, not beside the GGUF files, and this machine's speed "
                f"moves between runs, so this table does not say which engine is faster (`make bench PARTS=gguf` "
                f"times them side by side); llama.cpp multiplies the 4-bit weights as 8-bit integers")
    if speed >= 1:
        return "Q4_K_M is the faster engine on this CPU: llama.cpp multiplies its 4-bit weights as 8-bit integers"
    return (f"{hf['format']} is the faster engine on this CPU: PyTorch's {engines['PyTorch']} fp32 products outrun "
            f"llama.cpp's, which unpack the 4-bit weights into 8-bit integers")

# --- the worked solutions of notebook 03's exercises ------------------------------------------------------------------

def quantize_beside(cfg: CourseConfig, quant: str, out_dir: Path) -> Path:
    """Notebook 03's f16 file of this run quantized to `quant` (e.g. "Q5_K_M") into `out_dir`, with the decision rule
    of the chapter's GGUF files beside it, so that it decides as they do."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    out = quantize_gguf(layout(cfg).gguf("f16"), Path(out_dir) / f"model-{quant}.gguf", quant, cfg.threads)
    if (rule := read_decision(layout(cfg).gguf("Q4_K_M"))) is not None:
        write_decision(rule, out)
    return out


def _short(fmt: str) -> str:
    return fmt.removeprefix("GGUF ")


def _position(value: float, low: float, high: float, below: str, above: str) -> str:
    """Where `value` lies against `low` and `high`: "between", or below/above both of them."""
    low, high = sorted((low, high))
    return "between" if low <= value <= high else f"{below} both" if value < low else f"{above} both"


def placement_sentence(rows: list[dict], gold, cfg: CourseConfig, new: str = "GGUF Q5_K_M",
                       upper: str = "GGUF Q8_0", lower: str = "GGUF Q4_K_M") -> str:
    """Where the `new` format of a `compare_formats` table lands between `upper` and `lower`: on size and reviews per
    second as measured, and on macro-F1 by the paired bootstrap over the test reviews (`gold`) against each."""
    by = {r["format"]: r for r in rows}
    n, hi, lo = by[new], by[upper], by[lower]
    name, up, down = _short(new), _short(upper), _short(lower)
    tests = {other: verdict(gold, {**n, "method": name}, {**by[f], "method": other}, cfg.labels, cfg.seed)
             for other, f in ((up, upper), (down, lower))}
    said = {"ahead": "scores above", "tied": "is tied with", "behind": "falls behind"}
    f1 = " and ".join(f"{said[t['outcome']]} {other} ({t['interval']})" for other, t in tests.items())
    ties = all(t["tie"] for t in tests.values())
    size = _position(n["size_mb"], lo["size_mb"], hi["size_mb"], "smaller than", "larger than")
    speed = _position(n["reviews_per_second"], lo["reviews_per_second"], hi["reviews_per_second"], "slower than",
                      "faster than")
    return (f"{name} weighs {n['size_mb']:.4g} MB, {size} {down} ({lo['size_mb']:.4g}) and {up} "
            f"({hi['size_mb']:.4g}); it classifies {n['reviews_per_second']:.1f} reviews per second, {speed} {down} "
            f"({lo['reviews_per_second']:.1f}) and {up} ({hi['reviews_per_second']:.1f}); on macro-F1 "
            f"({n['macro_f1']:.3f}) it {f1}"
            f"{': the test set cannot tell the three apart' if ties else ''}.")


def changed_answers(texts, gold, first: dict, second: dict) -> pd.DataFrame:
    """One row per review: the gold label, both rows' answers and label probabilities (`compare_formats` rows with
    `with_probabilities`, rounded to 3 decimals, in the labels' order), `first`'s margin (its top probability minus its
    second) and whether the answer changed; the closest calls of `first` first."""
    def rounded(rows):
        return [tuple(round(float(p), 3) for p in row) for row in rows]

    margins = np.sort(np.asarray(first["probabilities"], dtype=float), axis=1)
    frame = pd.DataFrame({
        "text": list(texts), "gold": list(gold),
        first["format"]: first["predictions"], second["format"]: second["predictions"],
        f"{first['format']} p": rounded(first["probabilities"]),
        f"{second['format']} p": rounded(second["probabilities"]),
        "margin": margins[:, -1] - margins[:, -2],
        "changed": [a != b for a, b in zip(first["predictions"], second["predictions"])]})
    return frame.sort_values("margin", kind="stable")


def close_calls(frame, closest_share: float = 0.1) -> dict:
    """Figures on `changed_answers`' frame: how many answers changed, the median margin of the changed and of the
    unchanged reviews, the share of unchanged reviews whose margin is wider than the changed ones' median, and how
    many of the closest calls (the `closest_share` of reviews with the smallest margins) changed."""
    changed, unchanged = frame.loc[frame["changed"], "margin"], frame.loc[~frame["changed"], "margin"]
    closest = max(1, math.ceil(closest_share * len(frame)))
    median = float(changed.median()) if len(changed) else None
    return {"reviews": len(frame), "changed": int(len(changed)),
            "median_margin_changed": median,
            "median_margin_unchanged": float(unchanged.median()) if len(unchanged) else None,
            "unchanged_wider_than_changed_median": (float((unchanged > median).mean())
                                                    if median is not None and len(unchanged) else None),
            "closest": closest, "changed_among_closest": int(frame.nsmallest(closest, "margin")["changed"].sum())}


def close_calls_sentence(figures: dict, first: str = "HF fp32", second: str = "Q4_K_M") -> str:
    """Were the answers that `second` changed against `first` close calls of `first` already? Yes when `first`'s
    margin on them (median) is narrower than on three quarters of the unchanged reviews, partly when narrower than on
    half, no otherwise; with the closest calls' change rate against the overall one."""
    n, c = figures["reviews"], figures["changed"]
    if c == 0:
        return (f"No review changed its answer between {first} and {second} ({n} reviews): there are no changed "
                f"answers to compare with the close calls.")
    if c == n:
        return (f"Every one of the {n} reviews changed its answer between {first} and {second}: no unchanged review "
                f"to compare them with.")
    wider = figures["unchanged_wider_than_changed_median"]
    said = ("Yes: they were close calls already" if wider >= 0.75 else
            "Partly: they were closer calls than most" if wider > 0.5 else "No: they were not especially close calls")
    k, m = figures["closest"], figures["changed_among_closest"]
    return (f"{c} of {n} reviews changed their answer between {first} and {second}. {said} — {first}'s median margin "
            f"(top probability minus the second) was {figures['median_margin_changed']:.3f} on them against "
            f"{figures['median_margin_unchanged']:.3f} on the unchanged reviews, narrower than on {wider:.0%} of "
            f"those; {m} of the {k} closest calls changed ({m / k:.0%}), against {c / n:.0%} of all reviews.")
