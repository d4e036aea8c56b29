"""The course's targets, measured side by side on this machine in one run (what `make bench` prints and saves).

- The course as `make course` runs it (`python -m helpers course` in a child process), with the resident memory of
  all its processes together (entry point, notebook kernels, llama.cpp's server) sampled by psutil, and the wall time
  of each notebook.
- Training utilisation by the strict count of the path actually back-propagated (2 · frozen parameters below the
  lowest trainable block: forward only; 4 · frozen parameters from it upward: forward and input gradient; 6 · LoRA
  parameters: both gradients), with the 6 · N count beside it and the training rows per second (the learner's
  figure). Over two bars: torch's matrix-multiply peak (2048² products) and the shape limit, the step's own matrix
  products timed alone at their real shapes, both in the precision training runs in (bf16 where the CPU has AMX). The path is the transformer blocks: the embedding is a lookup,
  and TRL's fused LM head (tied to it) projects only the answer positions (`training.score_answer_positions_only`).
- Fine-tuned macro-F1 over several training seeds on one split, for the workshop profile (the course run is one seed)
  and the deep profile, each as HF fp32 and as GGUF Q4_K_M, and the encoder fine-tuned on the same rows (the margin
  the LLM must earn): mean, sample standard deviation, min and max.
- Classification throughput of the HF fp32 model and of GGUF Q4_K_M on the same reviews, and of label scoring vs
  generation on the same model, each with its accuracy; the practitioner's alternatives of notebook 05.
- Notebook 01 again beside one competing CPU-bound process, against its wall time alone.
- The course on reviews that all fill `max_length`, with its memory sampled (`long`); rare classes on two VADER
  corpora thinned to 9 % neutral, trained without and with oversampling (`rare`).
- The test suite as the Makefile runs it, `make test` and `make test-fast`, with their slowest tests (`tests`).
Each part is one function, named in `PARTS` (what `--parts` / `PARTS=` selects); one that returns False did not
finish, and `RESUME=` runs it again.
Every figure comes from the same helpers the notebooks call; nothing here has logic of its own beyond the timing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from datetime import datetime
from pathlib import Path

import pandas as pd

from helpers.ablation import ablation_outcome, run_masking_ablation
from helpers.alternatives import ENCODER, LLM, LLM_Q4, learning_curve
from helpers.classify import classify_file
from helpers.config import ROOT, CourseConfig, make_config
from helpers.data import load_amazon, load_hutto, prepare_splits, short_classes, to_chat_records
from helpers.diagnostics import layer_grid, lr_sweep
from helpers.distill import GOLD_ONLY, STUDENT, TEACHER, few_gold_regime
from helpers.distributed import classify_on_ray
from helpers.encoder import finetune_encoder
from helpers.evaluate import classification_metrics, verdict
from helpers.formats import compare_formats, engine_features
from helpers.gguf import gguf_files, llama_cpp_version, q4_k_m_file
from helpers.model import free_memory, load_model, resolve_model, training_precision
from helpers.predict import choose_decision_rule, hf_predictor, load_predictor
from helpers.runs import (ALTERNATIVES, DISTILLATION, MASKING, TRAINING, RunLayout, course_notebooks, course_runs,
                          json_safe, layout, load_metrics, new_run_dir, notebook_dir, recorded_config)
from helpers.training import fresh_trainer, make_trainer, save_adapter_and_merged, train, trained_layers


def allocator() -> str:
    """The memory allocator this process runs with: 'tcmalloc' / 'jemalloc' when preloaded, else 'glibc'."""
    preload = os.environ.get("LD_PRELOAD", "")
    return next((name for name in ("tcmalloc", "jemalloc") if name in preload), "glibc")


def best_mm_seconds(a, b, repeats: int) -> float:
    """The fastest of `repeats` `torch.mm(a, b)`, after one warm-up product (thread pool and caches)."""
    import torch

    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(threads: int, size: int = 2048, repeats: int = 10, precision: str = "fp32") -> float:
    """The best FLOP/s of `size` x `size` matrix products in `precision` (fp32 or bf16) with torch on `threads`
    threads."""
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, DTYPES[precision])
    return 2 * size ** 3 / best_mm_seconds(torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype),
                                           repeats)


DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def training_flops(frozen_below: int, frozen_above: int, lora_params: int, tokens: float) -> dict:
    """FLOPs of training on `tokens` tokens: the 6·N rule over every parameter on the path, and the strict count of
    what is actually back-propagated. Strict: frozen weights below the lowest trainable block run forward only (2·N:
    autograd stops there), frozen weights from it upward run forward and pass the input gradient on (4·N: no weight
    gradient), LoRA weights run forward and get both gradients (6·N)."""
    return {"six_n": 6 * (frozen_below + frozen_above + lora_params) * tokens,
            "strict": (2 * frozen_below + 4 * frozen_above + 6 * lora_params) * tokens}


def path_parameters(model) -> dict:
    """The parameters of a LoRA model by what training does with them: frozen below the lowest trainable block, frozen
    from it upward, LoRA, and the embedding (a lookup, left out of the path); with the block count and the lowest
    trainable block's index."""
    blocks = model.get_decoder().layers
    lowest = next((i for i, block in enumerate(blocks) if any(p.requires_grad for p in block.parameters())), len(blocks))
    embedding = model.get_input_embeddings().weight.numel()
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad) - embedding
    below = sum(p.numel() for block in blocks[:lowest] for p in block.parameters())
    return {"frozen_below": below, "frozen_above": frozen - below, "lora_params": lora, "embedding_params": embedding,
            "blocks": len(blocks), "lowest_trained_block": lowest}


def step_timer():
    """A TrainerCallback that keeps perf_counter() at the end of every optimizer step (in `.ends`)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
    return StepTimer()


def training_throughput(cfg: CourseConfig, steps: int = 8, warmup: int = 2, progress: bool = False) -> dict:
    """Train the course's LoRA setup for `warmup + steps` steps; tokens/s (non-padding tokens, as TRL counts them),
    training rows/s, seconds per step and FLOP/s by both counts, measured over the last `steps` steps."""
    records = to_chat_records(prepare_splits(cfg).train, cfg)
    timed = dataclasses.replace(cfg, max_steps=warmup + steps, logging_steps=1)
    trainer = fresh_trainer(timed, records, Path(cfg.run_dir) / "bench-trainer", disable_tqdm=not progress)
    timer = step_timer()
    trainer.add_callback(timer)
    history = train(trainer, len(records))["log_history"]
    tokens = {row["step"]: row["num_tokens"] for row in history if "num_tokens" in row}
    seconds = timer.ends[-1] - timer.ends[warmup - 1]
    measured_tokens = tokens[warmup + steps] - tokens[warmup]
    path = path_parameters(trainer.model)
    flops = training_flops(path["frozen_below"], path["frozen_above"], path["lora_params"], measured_tokens)
    return {"steps": steps, "batch_size": cfg.batch_size, "seconds_per_step": seconds / steps,
            "rows_per_second": cfg.batch_size * steps / seconds, "tokens_per_second": measured_tokens / seconds,
            "tokens_per_step": measured_tokens / steps, **path,
            "flops_per_second": {k: v / seconds for k, v in flops.items()}}


def block_products(config, lora_r: int, tokens: int, top: int = 0) -> list[dict]:
    """The matrix products of one training step through the transformer blocks of a model with `config` (a
    transformers config: hidden size, intermediate size, heads, kv heads), `tokens` tokens and LoRA of rank `lora_r`
    on its seven projections (of the top `top` blocks, 0: all). For each projection's frozen weight W and LoRA's A
    and B: the forward product x·Wᵀ and the input gradient dy·W, and for A and B only the weight gradient dyᵀ·x.
    `blocks` is how many blocks run the product: every block runs W forward, only the trained blocks run the rest
    (backward stops at the lowest one). `transposed` says which operand is a transposed view, as autograd passes it."""
    d, heads = config.hidden_size, config.num_attention_heads
    head = getattr(config, "head_dim", None) or d // heads
    q, kv, f = heads * head, config.num_key_value_heads * head, config.intermediate_size
    shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d), "gate_proj": (d, f),
              "up_proj": (d, f), "down_proj": (f, d)}
    count = config.num_hidden_layers
    trained = len(trained_layers(count, top) or range(count))
    rows = []
    for name, (n_in, n_out) in shapes.items():
        for weight, i, o in (("W", n_in, n_out), ("A", n_in, lora_r), ("B", lora_r, n_out)):
            passes = [("forward", tokens, i, o, "b"), ("input_grad", tokens, o, i, "")]
            if weight != "W":  # frozen weights get no weight gradient
                passes.append(("weight_grad", o, tokens, i, "a"))
            rows += [{"projection": name, "weight": weight, "pass": kind, "m": m, "k": k, "n": n, "transposed": t,
                      "flops": 2 * m * k * n, "blocks": count if (weight, kind) == ("W", "forward") else trained}
                     for kind, m, k, n, t in passes]
    return rows


def shape_limit(config, lora_r: int, tokens: int, threads: int, top: int = 0, repeats: int = 5,
                precision: str = "fp32") -> dict:
    """What the step's own matrix products reach alone: each of `block_products` timed with torch.mm on random
    tensors in the step's `precision` (bf16 training multiplies in bf16 throughout: autocast casts LoRA's operands too;
    best of `repeats`) on `threads` threads, and their total FLOPs over their total best time, each product
    weighted by the blocks that run it (a harmonic mean by FLOPs: the bar a step made only of these products meets).
    Attention's score products and the elementwise work are not in it, as they are not in the strict count."""
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, DTYPES[precision])

    def operand(rows, cols, transposed):
        return torch.randn(cols, rows, dtype=dtype).t() if transposed else torch.randn(rows, cols, dtype=dtype)
    products = block_products(config, lora_r, tokens, top)
    for p in products:
        p["seconds"] = best_mm_seconds(operand(p["m"], p["k"], "a" in p["transposed"]),
                                       operand(p["k"], p["n"], "b" in p["transposed"]), repeats)
        p["flops_per_second"] = p["flops"] / p["seconds"]
    flops = sum(p["flops"] * p["blocks"] for p in products)
    return {"tokens": tokens, "threads": threads, "precision": precision, "lora_r": lora_r, "blocks": config.num_hidden_layers,
            "trained_blocks": min(p["blocks"] for p in products), "flops_per_step": flops,
            "flops_per_second": flops / sum(p["seconds"] * p["blocks"] for p in products), "products": products}


class TreeMemory:
    """Samples, in a thread, the resident memory of a process and all its descendants together (psutil) every
    `interval` seconds; keeps the peak, which processes made it up, and each process's own peak (`peaks`: pid ->
    [name, bytes], in the order the processes were first seen)."""

    def __init__(self, pid: int, interval: float = 0.5):
        import psutil

        self.root, self.interval, self.peak, self.at_peak, self.peaks = psutil.Process(pid), interval, 0, [], {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> list[tuple[str, int, int]]:
        """[(process name, resident bytes, pid)] of the tree now; processes that ended meanwhile are left out."""
        import psutil

        rows = []
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return rows
        for proc in tree:
            try:
                rows.append((" ".join(proc.cmdline()[:4])[:80] or proc.name(), proc.memory_info().rss, proc.pid))
            except psutil.Error:
                pass
        return rows

    def _run(self):
        while not self._stop.is_set():
            rows = self.sample()
            total = sum(rss for _, rss, _ in rows)
            if total > self.peak:
                self.peak, self.at_peak = total, [(name, rss) for name, rss, _ in sorted(rows, key=lambda r: -r[1])]
            for name, rss, pid in rows:
                own = self.peaks.setdefault(pid, [name, 0])
                own[1] = max(own[1], rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def course_with_memory(profile: str, overrides: dict | None = None, root: Path = ROOT / "runs",
                       interval: float = 0.5, only: list[str] | None = None, env: dict | None = None) -> dict:
    """Run `python -m helpers course` (what `make course` runs, with this process's environment: the same allocator,
    and an empty response cache in the run folder) as a child process and sample the resident memory of it and all
    its kernels, servers and workers together; `env` adds to its environment. Returns the run folder, whether it finished, its wall time, the peak
    (bytes, and the processes at the peak) and each notebook kernel's own peak (`kernel_peaks`: notebook -> bytes;
    the course runs one kernel per notebook, in order, so the n-th kernel seen is the n-th notebook that ran)."""
    run_dir = new_run_dir(profile, root)
    knobs = run_dir / "bench-knobs.json"
    # an empty few-shot answer cache, as on a fresh machine (a warm one made notebook 04 take 12 s instead of 121 s)
    cold = {"response_cache": str(run_dir / "bench-responses.jsonl")}
    knobs.write_text(json.dumps(json_safe({**cold, **(overrides or {})})))
    command = [sys.executable, "-m", "helpers", "course", "--profile", profile, "--run-dir", str(run_dir),
               "--config", str(knobs)]
    if only:
        command += ["--only", *only]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})})
    with TreeMemory(process.pid, interval) as memory:
        returncode = process.wait()
    ran = [nb.parent.name for nb in sorted(run_dir.glob("[0-9][0-9]_*/[0-9][0-9]_*.ipynb"))]
    kernels = [rss for name, rss in memory.peaks.values() if "ipykernel" in name]
    return {"run_dir": str(run_dir), "finished": returncode == 0, "wall_seconds": time.perf_counter() - start,
            "peak_rss_bytes": memory.peak, "interval_seconds": interval,
            "processes_at_peak": [{"process": name, "rss_bytes": rss} for name, rss in memory.at_peak],
            "kernel_peaks": dict(zip(ran, kernels))}


def seed_run(cfg: CourseConfig, encoder: bool = False, progress: bool = False) -> dict:
    """One training seed of notebooks 02-03 (and 05's encoder) on the same split: train the LoRA adapter with
    `cfg.seed`, score the merged model on the test split, export it to GGUF Q4_K_M with llama.cpp's tools and score
    that; with `encoder`, fine-tune the encoder on the same training rows with the same seed. Macro-F1 of each."""
    splits = prepare_splits(cfg)
    model, tokenizer = load_model(cfg)
    trainer = make_trainer(cfg, model, tokenizer, to_chat_records(splits.train, cfg),
                           output_dir=Path(cfg.run_dir) / "trainer", disable_tqdm=not progress)
    seconds = train(trainer, len(splits.train))["train_seconds"]
    merged = save_adapter_and_merged(trainer, cfg)["merged"]
    scores = {LLM: hf_predictor(trainer.model, tokenizer, cfg).evaluate(splits.test, progress=progress)}
    del trainer, model  # one model in memory at a time
    free_memory()
    q4 = q4_k_m_file(cfg, merged, layout(cfg).gguf("Q4_K_M"))
    scores[LLM_Q4] = load_predictor(cfg, q4).evaluate(splits.test, progress=progress)
    out = {"seed": cfg.seed, "train_rows": len(splits.train), "train_seconds": seconds}
    if encoder:
        tuned = finetune_encoder(cfg, splits.train, Path(cfg.run_dir) / "encoder", progress)
        predicted = [cfg.labels[i] for i in tuned["predict"](list(splits.test["text"])).argmax(1)]
        scores[ENCODER] = classification_metrics(splits.test["label"], predicted, cfg.labels)
        out["encoder_train_seconds"] = tuned["train_seconds"]
        del tuned
        free_memory()
    return {**out, "macro_f1": {name: m["macro_f1"] for name, m in scores.items()},
            "accuracy": {name: m["accuracy"] for name, m in scores.items()}}


def course_seed(run_dir: Path) -> dict | None:
    """The seed a course run trained with, read as `seed_run` reports it: macro-F1 and accuracy of the fine-tuned
    LLM, its Q4_K_M file and the fine-tuned encoder (notebook 05's rows), or None if notebook 05 did not run."""
    m = RunLayout(run_dir).metrics(ALTERNATIVES)
    if not m:
        return None
    rows = {r["method"]: r for r in m["results"]["test"] if r["method"] in (LLM, LLM_Q4, ENCODER)}
    m02 = load_metrics(run_dir).get("02_logged_training", {})
    return {"seed": m["config"]["seed"], "train_rows": m["config"]["train_size"], "from_course_run": str(run_dir),
            "train_seconds": m02.get("train_seconds"),
            "macro_f1": {k: r["macro_f1"] for k, r in rows.items()}, "accuracy": {k: r["accuracy"] for k, r in rows.items()}}


def spread(values) -> dict:
    """Mean, sample standard deviation, min and max of a few runs' figures."""
    values = [float(v) for v in values]
    return {"n": len(values), "mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def over_seeds(runs: list[dict]) -> dict:
    """{method: spread of its macro-F1} (and accuracy) over the seeds of `runs`."""
    methods = [name for name in runs[0]["macro_f1"] if all(name in r["macro_f1"] for r in runs)]
    return {"seeds": [r["seed"] for r in runs], "runs": runs,
            "macro_f1": {name: spread(r["macro_f1"][name] for r in runs) for name in methods},
            "accuracy": {name: spread(r["accuracy"][name] for r in runs) for name in methods},
            "train_seconds": spread(r["train_seconds"] for r in runs if r.get("train_seconds") is not None)
            if any(r.get("train_seconds") is not None for r in runs) else None}


def accuracy_over_seeds(profile: str, seeds, work_dir: Path, overrides: dict | None = None, first: dict | None = None,
                        encoder: bool = False, progress: bool = False) -> dict:
    """`seed_run` of `profile` for every seed, all on the split of the profile's own seed (only training varies);
    `first` is a run already measured (the course run's), counted as one of the seeds."""
    base = make_config(profile, **(overrides or {}))
    runs = [first] if first else []
    for seed in seeds:
        if first and seed == first["seed"]:
            continue
        cfg = dataclasses.replace(base, seed=seed, split_seed=base.split_seed,
                                  run_dir=Path(work_dir) / f"{profile}-seed{seed}")
        runs.append(seed_run(cfg, encoder=encoder, progress=progress))
    return over_seeds(runs)


def inference_throughput(cfg: CourseConfig, model_dir: Path, gguf_path: Path, test_df, progress: bool = False) -> dict:
    """Reviews per second and accuracy of one model on the same reviews: HF label scoring and llama.cpp label
    scoring of the GGUF file (notebook 03's comparison), and HF generation."""
    hf, gguf = compare_formats(cfg, model_dir, {"GGUF Q4_K_M": gguf_path}, test_df, progress)
    model, tokenizer = load_model(cfg, model_dir)
    generation = hf_predictor(model, tokenizer, cfg).evaluate(test_df, method="generation", progress=progress)
    keys = ("reviews_per_second", "accuracy", "macro_f1", "invalid_rate")
    return {"reviews": len(test_df), "model": str(model_dir), "gguf": str(gguf_path),
            **{name: {k: row[k] for k in keys} for name, row in
               (("hf_scoring", hf), ("hf_generation", generation), ("gguf_scoring", gguf))}}


def latest_run(profile: str, root: Path = ROOT / "runs") -> Path | None:
    """The newest course run of `profile` in which every notebook recorded its wall time, or None."""
    names = {nb.stem for nb in course_notebooks()}

    def finished(run):
        metrics = load_metrics(run)
        return all("wall_seconds" in metrics.get(name, {}) for name in names)
    return next((run for run in course_runs(profile, root) if finished(run)), None)


def alternatives(run_dir: Path) -> dict | None:
    """Notebook 05's in-domain rows and human ceiling of a course run, best macro-F1 first (None if it did not run)."""
    m = RunLayout(run_dir).metrics(ALTERNATIVES)
    if not m:
        return None
    keys = ("method", "accuracy", "macro_f1", "train_seconds", "reviews_per_second", "size_mb")
    rows = sorted(m["results"]["test"], key=lambda r: -r["macro_f1"])
    return {"rows": [{k: r.get(k) for k in keys} for r in rows], "human": m["human"].get("test")}


def notebook_wall_times(run_dir: Path) -> dict:
    """{notebook: seconds} of a course run, as `make course` recorded them, plus the total."""
    times = {name: m["wall_seconds"] for name, m in load_metrics(run_dir).items() if "wall_seconds" in m}
    return {**times, "total": round(sum(times.values()), 1)}


def ratios(results: dict) -> dict:
    """The targets' figures, from what was measured in the same run; the strict utilisation first."""
    out = {}
    training, peak, shapes = results.get("training"), results.get("matmul_peak_flops"), results.get("shapes")
    if training:
        flops = training["flops_per_second"]
        if peak:
            out["training_utilisation_strict"] = flops["strict"] / peak
        if shapes:
            out["training_utilisation_strict_vs_shapes"] = flops["strict"] / shapes["flops_per_second"]
        if peak:
            out["training_utilisation_six_n"] = flops["six_n"] / peak
    course = results.get("course")
    if course:
        out["course_peak_memory_gib"] = course["peak_rss_bytes"] / 2 ** 30
    if results.get("long"):
        out["long_reviews_peak_memory_gib"] = results["long"]["peak_rss_bytes"] / 2 ** 30
    if results.get("rare"):
        default = "oversampled" if make_config(results.get("profile", "workshop")).oversample else "distinct"
        arms = results["rare"].values()
        out["rare_lowest_class_f1"] = min(min(arm[default]["per_class_f1"].values()) for arm in arms)
        out["rare_macro_f1_gain_from_oversampling"] = min(arm["oversampled"]["macro_f1"] - arm["distinct"]["macro_f1"]
                                                          for arm in arms)
    if results.get("notebooks"):
        out["course_minutes"] = results["notebooks"]["total"] / 60
    for profile in ("workshop", "deep"):
        seeds = results.get(f"{profile}_seeds")
        if not seeds:
            continue
        f1 = seeds["macro_f1"]
        out[f"{profile}_macro_f1_hf"] = f1[LLM]["mean"]
        out[f"{profile}_macro_f1_q4_k_m"] = f1[LLM_Q4]["mean"]
        if ENCODER in f1:
            out[f"{profile}_margin_over_encoder"] = f1[LLM]["mean"] - f1[ENCODER]["mean"]
        if seeds.get("train_seconds"):
            out[f"{profile}_training_minutes"] = seeds["train_seconds"]["max"] / 60
    inference = results.get("inference")
    if inference:
        hf, gen, gguf = (inference[k]["reviews_per_second"] for k in ("hf_scoring", "hf_generation", "gguf_scoring"))
        out["gguf_q4_k_m_vs_hf_fp32"] = gguf / hf
        out["scoring_vs_generation"] = hf / gen
    suite = results.get("tests", {})
    if "test" in suite:
        out["test_suite_minutes"] = suite["test"]["wall_seconds"] / 60
    if "test-fast" in suite:
        out["test_fast_seconds"] = suite["test-fast"]["wall_seconds"]
    gaps = results.get("distill", {}).get("gaps")
    if gaps:
        out["distill_teacher_minus_student"] = gaps["teacher_minus_student"]["mean"]
        out["distill_student_minus_gold_only"] = gaps["student_minus_gold_only"]["mean"]
        out["distill_speed_vs_teacher"] = gaps["speed_vs_teacher"]["mean"]
    for kind, m in results.get("classify_scale", {}).get("models", {}).items():
        out[f"classify_{kind}_ray_best_vs_one_process"] = max(r["reviews_per_second"] for r in m["ray"].values()) \
            / m["single_process"]
    decides = results.get("decides", {})
    if "masked_macro_f1" in decides:
        out["decides_masked_macro_f1_lowest"] = decides["masked_macro_f1"]["min"]
        out["decides_curve_lowest_minus_zero_shot"] = decides["curve_lowest_minus_zero_shot"]
    if results.get("laptop"):
        out["laptop_same_verdicts"] = float(results["laptop"]["same_verdicts"])
    for setting, m in results.get("gguf", {}).items():
        where = "laptop" if "laptop" in setting else "this_cpu"
        for r in m["rows"]:
            if r["format"] == "GGUF Q4_K_M":
                out[f"gguf_q4_k_m_{'' if r['batch'] == 1 else 'batched_'}vs_hf_{where}"] = r["vs_hf"]
        out["gguf_batched_probability_drift"] = max(out.get("gguf_batched_probability_drift", 0.0), *(
            r["drift_vs_one_at_a_time"] for r in m["rows"] if "drift_vs_one_at_a_time" in r))
    contention = results.get("contention")
    if contention and contention["under_load_seconds"] and contention["alone_seconds"]:
        out["contention_slowdown"] = contention["under_load_seconds"] / contention["alone_seconds"]
    return out


TARGETS = {"training_utilisation_strict": (">=", 0.70), "training_utilisation_strict_vs_shapes": (">=", 0.8),
           "training_utilisation_six_n": (">=", 0.5), "course_peak_memory_gib": ("<=", 4.0),
           "long_reviews_peak_memory_gib": ("<=", 4.0), "rare_lowest_class_f1": (">=", 0.01),
           "rare_macro_f1_gain_from_oversampling": (">=", 0.0),
           "course_minutes": ("<=", 10.0), "workshop_macro_f1_hf": (">=", 0.75), "workshop_macro_f1_q4_k_m": (">=", 0.73),
           "workshop_margin_over_encoder": (">=", 0.05), "deep_macro_f1_hf": (">=", 0.82),
           "deep_margin_over_encoder": (">=", 0.05), "deep_training_minutes": ("<=", 15.0),
           "gguf_q4_k_m_vs_hf_fp32": (">=", 3.0), "scoring_vs_generation": (">=", 2.0), "contention_slowdown": ("<=", 2.5),
           "test_suite_minutes": ("<=", 8.0), "test_fast_seconds": ("<=", 60.0),
           "distill_teacher_minus_student": ("<=", 0.02), "distill_student_minus_gold_only": (">=", 0.03),
           "distill_speed_vs_teacher": (">=", 5.0), "laptop_same_verdicts": (">=", 1.0),
           "decides_masked_macro_f1_lowest": (">=", 0.6), "decides_curve_lowest_minus_zero_shot": (">=", 0.0),
           "gguf_q4_k_m_vs_hf_this_cpu": (">=", 1.0), "gguf_q4_k_m_vs_hf_laptop": (">=", 1.5),
           "gguf_batched_probability_drift": ("<=", 1e-4)}
NAMED_COUNT = ("the strict count is (2 · frozen parameters below the lowest trainable block + 4 · frozen from it upward + "
               "6 · LoRA) · tokens (backward stops at the lowest trainable block; frozen weights get no weight "
               "gradient), six_n is 6 · all parameters on the path · tokens")


def format_results(results: dict) -> str:
    """The figures as a short plain-text table, each target's figure beside its target, the strict utilisation first
    (over the matmul peak and over the shape limit, with the training rows per second beside it)."""
    lines = [f"machine: {results['cpus']} CPUs, {results['threads']} threads, allocator {results['allocator']}, "
             f"torch {results['torch']}"]
    r = results["ratios"]
    bars = [f"{r[key]:.3f} of {bar}" for key, bar in (("training_utilisation_strict", "the matmul peak"),
                                                       ("training_utilisation_strict_vs_shapes", "the shape limit"))
            if key in r]
    if bars:
        rows = f" at {results['training']['rows_per_second']:.2f} training rows/s" if "training" in results else ""
        lines.append(f"training utilisation (strict count): {', '.join(bars)}{rows}; {NAMED_COUNT}")
    if "matmul_peak_flops" in results:
        lines.append(f"{results.get('precision', 'fp32')} matmul peak (the precision training runs in): "
                     f"{results['matmul_peak_flops'] / 1e9:.1f} GFLOP/s")
    if "training" in results:
        t = results["training"]
        lines.append(f"training: {t['seconds_per_step']:.2f} s/step, {t['rows_per_second']:.2f} rows/s, "
                     f"{t['tokens_per_second']:.0f} tokens/s ({t['tokens_per_step']:.0f} tokens/step, batch "
                     f"{t['batch_size']}), LoRA from block {t['lowest_trained_block']} of {t['blocks']}: "
                     f"{t['frozen_below'] / 1e6:.1f} M frozen below it (forward only) + {t['frozen_above'] / 1e6:.1f} M "
                     f"frozen from it upward + {t['lora_params'] / 1e6:.2f} M LoRA parameters "
                     f"({t['embedding_params'] / 1e6:.1f} M embedding left out)")
    if "shapes" in results:
        lines += format_shapes(results["shapes"], results.get("matmul_peak_flops"))
    if "course" in results:
        c = results["course"]
        lines.append(f"course run {c['run_dir']}: {c['wall_seconds'] / 60:.1f} min, peak resident memory of all its "
                     f"processes together {c['peak_rss_bytes'] / 2 ** 30:.2f} GiB (sampled every {c['interval_seconds']} s); "
                     "at the peak: " + ", ".join(f"{p['process']} {p['rss_bytes'] / 2 ** 30:.2f} GiB"
                                                 for p in c["processes_at_peak"][:4]))
        if c.get("kernel_peaks"):
            lines.append("  each notebook's kernel at its own peak: " + ", ".join(
                f"{name[:2]} {rss / 2 ** 30:.2f} GiB" for name, rss in c["kernel_peaks"].items()))
    for profile in ("workshop", "deep"):
        seeds = results.get(f"{profile}_seeds")
        if seeds:
            lines.append(f"{profile} profile, seeds {seeds['seeds']} (same split; {seeds['runs'][0]['train_rows']} "
                         f"training rows), macro-F1 mean ± sd [min, max]:")
            lines += [f"  {name:<42} {f['mean']:.3f} ± {f['sd']:.3f} [{f['min']:.3f}, {f['max']:.3f}]  accuracy "
                      f"{seeds['accuracy'][name]['mean']:.3f}" for name, f in seeds["macro_f1"].items()]
            if seeds.get("train_seconds"):
                ts = seeds["train_seconds"]
                lines.append(f"  training {ts['mean']:.0f} s per seed (longest {ts['max']:.0f} s)")
    if "inference" in results:
        inf = results["inference"]
        lines.append(f"classification of the same {inf['reviews']} reviews:")
        for name in ("hf_scoring", "hf_generation", "gguf_scoring"):
            row = inf[name]
            lines.append(f"  {name:<14} {row['reviews_per_second']:6.1f} reviews/s  accuracy {row['accuracy']:.3f}  "
                         f"macro-F1 {row['macro_f1']:.3f}  invalid {row['invalid_rate']:.3f}")
    if "notebooks" in results:
        lines.append(f"notebook wall times ({results['course_run']}):")
        lines += [f"  {name:<28} {seconds:7.1f} s" for name, seconds in results["notebooks"].items()]
    if results.get("alternatives"):
        alt = results["alternatives"]
        lines.append("every method on the same test reviews (notebook 05 of that run):")
        lines += [f"  {row['method']:<48} accuracy {row['accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}  train "
                  f"{_or_dash(row['train_seconds'], '{:7.1f} s')}  "
                  f"{_or_dash(row['reviews_per_second'], '{:7.1f} reviews/s')}  {_or_dash(row['size_mb'], '{:6.1f} MB')}"
                  for row in alt["rows"]]
        if alt["human"]:
            h = alt["human"]
            lines.append(f"  {'one human rater vs the others':<48} accuracy {h['accuracy_mean']:.3f}  macro-F1 "
                         f"{h['macro_f1_mean']:.3f} ± {h['macro_f1_sd']:.3f}")
    if results.get("layer_grid"):
        grid = results["layer_grid"]
        lines.append(f"LoRA blocks x training rows, one epoch each, macro-F1 on {grid[0]['eval_rows']} eval rows:")
        lines += [f"  {'every block' if p['layers'] == 0 else 'top %d blocks' % p['layers']:<14} {p['rows']:5d} rows  "
                  f"{p['train_seconds']:6.1f} s  {p['rows_per_second']:5.2f} rows/s  eval macro-F1 {p['eval_macro_f1']:.3f}"
                  for p in grid]
    for name, lines_of in PART_LINES.items():
        if name in results:
            lines += lines_of(results[name])
    if "contention" in results:
        c = results["contention"]
        lines.append(f"contention: {c['notebook']} took {_or_dash(c['under_load_seconds'], '{:.1f} s')} beside one "
                     f"competing process (a 1-thread torch matmul loop; {c['run_dir']}"
                     f"{'' if c['finished'] else ', did not finish'}), {_or_dash(c['alone_seconds'], '{:.1f} s')} alone "
                     f"({c['alone_run'] or 'no course run to compare with'})")
    lines.append("targets:")
    for name, value in r.items():
        op, target = TARGETS.get(name, (None, None))
        met = "" if op is None else (" (target %s %g: %s)" % (op, target, "met" if (value >= target if op == ">="
                                                                                       else value <= target) else "missed"))
        lines.append(f"  {name}: {value:.3f}{met}")
    return "\n".join(lines)


def long_lines(c: dict) -> list[str]:
    return [f"long reviews ({c['review_characters']} characters each, {c['knobs']['train_size']} training "
            f"rows; {c['run_dir']}{'' if c['finished'] else ', did not finish'}): {c['wall_seconds'] / 60:.1f} "
            f"min, peak resident memory {c['peak_rss_bytes'] / 2 ** 30:.2f} GiB"]


def rare_lines(rare: dict) -> list[str]:
    lines = [f"rare classes ({RARE_NEUTRAL} neutral of {RARE_ROWS} rows), test macro-F1 (per-class F1), decision rule:"]
    for corpus, arms in rare.items():
        for name in ("distinct", "oversampled"):
            a = arms[name]
            per_class = ", ".join(f"{label} {f1:.3f}" for label, f1 in a["per_class_f1"].items())
            lines.append(f"  {corpus:<7} {name:<12} {a['train_rows']:4d} training rows ({a['train_distinct']} distinct) "
                         f"{a['macro_f1']:.3f} ({per_class}), {a['rule']} (chosen on {a['eval_rows']} eval rows)")
        lines.append(f"  {corpus:<7} {arms['verdict']}")
    return lines


def tests_lines(runs: dict) -> list[str]:
    lines = []
    for target, run in runs.items():
        lines.append(f"make {target}: {run['wall_seconds'] / 60:.1f} min ({run['wall_seconds']:.0f} s), {run['tests']} "
                     f"tests: {run['passed']} passed, {run['failure'] + run['error']} failed, {run['skipped']} skipped")
    slowest = runs.get("test", next(iter(runs.values())))["slowest"][:10]
    return lines + ["  slowest: " + "; ".join(f"{s['test'].rsplit('.', 1)[-1]} {s['seconds']:.0f} s" for s in slowest)]


def distill_lines(d: dict) -> list[str]:
    lines = [f"distillation ({d.get('profile')} profile, seeds {', '.join(str(r['seed']) for r in d['runs'])}), "
             f"test macro-F1 mean ± sd (min-max):"]
    for method, f1 in d.get("macro_f1", {}).get("test", {}).items():
        lines.append(f"  {method:<48} {f1['mean']:.3f} ± {f1['sd']:.3f} ({f1['min']:.3f}-{f1['max']:.3f})")
    for run in d["runs"]:
        lines.append(f"  seed {run['seed']}: pool {run['pool_rows']} rows, {run['course_wall_seconds'] / 60:.1f} min "
                     f"(notebook 06 {run['wall_seconds'] / 60:.1f} min); {run['verdict']['closing']}")
    return lines


def laptop_lines(d: dict) -> list[str]:
    lines = [f"the central verdict in two settings (fine-tuned LLM minus the best alternative, macro-F1, 95 % interval); "
             f"{'the same' if d['same_verdicts'] else 'NOT the same'} in both:"]
    for setting, verdicts in d["verdicts"].items():
        for domain, v in verdicts.items():
            lines.append(f"  {setting:<24} {domain:<4} {v['llm']} {v['llm_macro_f1']:.3f} vs {v['rival']} "
                         f"{v['rival_macro_f1']:.3f}: {v['difference']:+.3f} ({v['low']:+.3f} to {v['high']:+.3f}) "
                         f"{v['outcome']}, {v['n']} reviews")
    return lines


def decides_lines(d: dict) -> list[str]:
    f1 = d["masked_macro_f1"]
    lines = [f"the experiments over seeds {', '.join(map(str, d['seeds']))} ({d['profile']} profile, one split):",
             f"  masking: masked arm test macro-F1 {f1['mean']:.3f} ± {f1['sd']:.3f} ({f1['min']:.3f}-{f1['max']:.3f}); "
             f"verdicts {', '.join(d['masking_outcomes'])}",
             "  LR sweep, eval macro-F1: " + ", ".join(f"{lr} {s['mean']:.3f} ± {s['sd']:.3f}" for lr, s in d["sweep"].items()),
             "  LLM learning curve, test macro-F1: " + ", ".join(f"{size} rows {s['mean']:.3f} ± {s['sd']:.3f}"
                                                                 for size, s in d["curve"].items())
             + f"; zero-shot {d['zero_shot_macro_f1']:.3f}, lowest point {d['curve_lowest_minus_zero_shot']:+.3f} from it"]
    return lines


def distill_few_lines(d: dict) -> list[str]:
    lines = [f"distillation with few gold rows (seeds {', '.join(map(str, d['seeds']))}, teacher {d['teacher_run']}), "
             f"macro-F1 mean ± sd; the student against MiniLM alone and against the teacher, per seed:"]
    for r in d["rows"]:
        lines.append(f"  {r['pool']:<14} {r['domain']:<4} {r['gold_rows']:4d} gold: student {r['student']['mean']:.3f} ± "
                     f"{r['student']['sd']:.3f}, MiniLM alone {r['gold_only']['mean']:.3f} ± {r['gold_only']['sd']:.3f}, "
                     f"teacher {r['teacher']['mean']:.3f}; vs alone {', '.join(r['vs_gold_only'])}; vs teacher "
                     f"{', '.join(r['vs_teacher'])}")
    return lines


def scale_lines(c: dict) -> list[str]:
    lines = [f"classify at scale ({c['rows']} reviews, {c['cores']} cores), reviews/s:"]
    for kind, m in c["models"].items():
        ray = ", ".join(f"{w} worker{'s' * (int(w) > 1)} {r['reviews_per_second']:.0f}"
                        + (f" ({r['lines_differing']} lines differ)" if r["lines_differing"] else "")
                        for w, r in m["ray"].items())
        start = statistics.mean(r["ray_start_seconds"] for r in m["ray"].values())
        lines.append(f"  {kind:<8} one process {m['single_process']:.0f}; Ray {ray}; Ray starts in {start:.1f} s")
    return lines


def gguf_lines(settings: dict) -> list[str]:
    lines = []
    for name, m in settings.items():
        lines.append(f"label scoring of {m['reviews']} test reviews, {name} (llama.cpp: {m['engines']['llama.cpp']}; "
                     f"PyTorch: {m['engines']['PyTorch']}):")
        lines += [f"  {row['format']:<12} {'' if row['batch'] is None else '%2d per decode' % row['batch']:<14}"
                  f"{row['reviews_per_second']:6.1f} reviews/s  {row['vs_hf']:5.2f}x HF  macro-F1 {row['macro_f1']:.3f} "
                  f"({row['vs_hf_f1']} vs HF)"
                  + (f"  largest probability change vs one at a time {row['drift_vs_one_at_a_time']:.1e}"
                     if "drift_vs_one_at_a_time" in row else "") for row in m["rows"]]
    return lines


PART_LINES = {"long": long_lines, "rare": rare_lines, "tests": tests_lines, "distill": distill_lines,
              "classify_scale": scale_lines, "laptop": laptop_lines, "decides": decides_lines,
              "distill_few": distill_few_lines, "gguf": gguf_lines}  # the lines of a part whose figures are its own


def format_shapes(shapes: dict, peak: float | None) -> list[str]:
    """The shape limit and one line per projection: GFLOP/s of each product (W frozen, A and B LoRA's; fwd = forward,
    dx = input gradient, dW = weight gradient)."""
    of_peak = f", {shapes['flops_per_second'] / peak:.2f} of the matmul peak" if peak else ""
    lines = [f"shape limit: {shapes['flops_per_second'] / 1e9:.1f} GFLOP/s{of_peak} (the step's matrix products alone, "
             f"{shapes['tokens']} tokens, LoRA r{shapes['lora_r']} on {shapes['trained_blocks']} of "
             f"{shapes['blocks']} blocks, {shapes['threads']} threads), GFLOP/s per product:"]
    short = {"forward": "fwd", "input_grad": "dx", "weight_grad": "dW"}
    dims, cells = {}, {}
    for p in shapes["products"]:
        if (p["weight"], p["pass"]) == ("W", "forward"):  # x (tokens × in) · Wᵀ (in × out)
            dims[p["projection"]] = f"{p['k']}→{p['n']}"
        cells.setdefault(p["projection"], []).append(f"{p['weight']} {short[p['pass']]} "
                                                     f"{p['flops_per_second'] / 1e9:.0f}")
    return lines + [f"  {name:<9} {dims[name]:>9}: {', '.join(row)}" for name, row in cells.items()]


def _or_dash(value, fmt: str) -> str:
    return fmt.format(value) if value is not None else "-".rjust(len(fmt.format(0)))


def save_results(results: dict, path: Path | None = None, folder: Path = ROOT / "runs" / "bench") -> Path:
    """Write the figures to `path`, default a new `runs/bench/bench-<timestamp>.json` (to compare over time)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(path) if path else folder / f"bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(results), indent=2))
    tmp.replace(path)
    return path


class BenchError(ValueError):
    """A file to resume from that make bench did not write."""


def earlier_bench(path: Path) -> dict:
    """The figures of an unfinished `make bench` (its JSON file), to go on from where it stopped."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BenchError(f"Cannot resume from {path}: {err}. Pass a runs/bench/bench-*.json file that make bench "
                         f"wrote, or leave RESUME out to start a new benchmark.") from None
    if not isinstance(results, dict) or "parts_done" not in results:
        raise BenchError(f"{path} records no finished bench parts: resume from a file that make bench wrote.")
    return results


def bench_models(cfg: CourseConfig, run_dir: Path | None, work_dir: Path) -> tuple[Path, Path]:
    """(HF folder, GGUF Q4_K_M file) to measure: the fine-tuned pair of a course run when there is one, else the base
    model and its own Q4_K_M, made once in `work_dir` with llama.cpp's converter and quantizer."""
    if run_dir is not None:
        merged, gguf = RunLayout(run_dir).merged, RunLayout(run_dir).gguf("Q4_K_M")
        if merged.is_dir() and gguf.is_file():
            return merged, gguf
    model_dir = Path(resolve_model(cfg))
    gguf = Path(work_dir) / f"{model_dir.name}-Q4_K_M.gguf"
    if not gguf.exists():
        q4_k_m_file(cfg, model_dir, gguf)
    return model_dir, gguf


# The competitor of the "contention" part: a one-thread fp32 matmul loop. Its likeliest neighbour on a course
# machine is another PyTorch job (a second kernel, a classmate's training), which competes for the FMA units and the
# caches as well as for a core; a pure-Python busy loop would compete for the core alone and flatter the figure.
COMPETITOR = [sys.executable, "-c", "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\n"
              "while True:\n    torch.mm(a, a)"]
CONTENTION_NOTEBOOK = "01_label_masking"


@contextlib.contextmanager
def competing_process(command: list[str] = COMPETITOR):
    """Run `command` (one CPU-bound process on one thread) for as long as the block runs; always killed afterwards,
    also when the block fails."""
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def notebook_under_load(profile: str, overrides: dict | None, root: Path, notebook: str = CONTENTION_NOTEBOOK,
                        competitor: list[str] = COMPETITOR) -> dict:
    """`notebook` run as `make course --only` runs it (`course_with_memory`, in a run folder under `root`, out of the
    way of `runs/`'s course runs) while `competitor` runs beside it; its own recorded wall time."""
    with competing_process(competitor):
        course = course_with_memory(profile, overrides, root, only=[notebook])
    seconds = load_metrics(course["run_dir"]).get(notebook, {}).get("wall_seconds")
    return {"notebook": notebook, "run_dir": course["run_dir"], "finished": course["finished"],
            "under_load_seconds": seconds, "competitor": " ".join(competitor)}


@dataclasses.dataclass
class Bench:
    """What the parts share: the config and knobs of this benchmark, the course run the parts read, the results."""
    cfg: CourseConfig
    results: dict
    run_dir: Path | None = None
    steps: int = 8
    seeds: tuple = (42, 43, 44)
    progress: bool = True
    overrides: dict | None = None
    save: object = None  # save(results): called by a long part between its own steps too
    recorded: Path | None = None  # where the distill part writes the figures the workshop's notebook 06 shows
    recorded_few: Path | None = None  # where the distill-few part writes the few-gold figures notebook 06 shows


def part_course(bench: Bench) -> None:
    """The course as `make course` runs it, with its memory sampled; the later parts read this run."""
    course = bench.results["course"] = course_with_memory(bench.cfg.profile, bench.overrides)
    if not course["finished"]:
        raise RuntimeError(f"The course failed; see {course['run_dir']}. The benchmark needs a finished run.")
    bench.run_dir = Path(course["run_dir"])


def part_matmul(bench: Bench) -> None:
    """The matmul peak in the precision training runs in (`training_precision`: bf16 where the CPU has AMX tiles);
    measured again at the end of the run, keeping the higher (a shared machine's peak drifts: the higher is the
    harder bar)."""
    precision = training_precision(bench.cfg)
    bench.results["precision"] = precision
    bench.results["matmul_peak_flops"] = max(bench.results.get("matmul_peak_flops", 0),
                                             matmul_peak(bench.cfg.threads, precision=precision))


def part_training(bench: Bench) -> None:
    bench.results["training"] = training_throughput(bench.cfg, steps=bench.steps, progress=bench.progress)


def part_shapes(bench: Bench) -> None:
    """The shape limit at the training part's tokens per step (batch × mean non-padding tokens, what the strict count
    credits; else batch × 45, the course's typical example), with the shapes read from the configured model's config."""
    from transformers import AutoConfig

    cfg = bench.cfg
    tokens = round(bench.results.get("training", {}).get("tokens_per_step") or cfg.batch_size * 45)
    config = AutoConfig.from_pretrained(resolve_model(cfg))
    bench.results["shapes"] = shape_limit(config, cfg.lora_r, tokens, cfg.threads, cfg.lora_layers,
                                          precision=training_precision(cfg))


def part_inference(bench: Bench) -> None:
    model_dir, gguf = bench_models(bench.cfg, bench.run_dir, Path(bench.cfg.run_dir))
    bench.results["inference"] = inference_throughput(bench.cfg, model_dir, gguf, prepare_splits(bench.cfg).test,
                                                      bench.progress)


# PyTorch limited to AVX2, as on most laptops (no AVX-512, no AMX): its own kernels, oneDNN's and MKL's
LAPTOP_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
GGUF_REVIEWS = 240  # the test reviews every format scores in the "gguf" part
GGUF_BATCH = 16  # reviews per decode of its batched rows (the course scores one at a time: `cfg.gguf_batch_size`)


def gguf_speed(profile: str, overrides: dict, run_dir: str, reviews: int = GGUF_REVIEWS) -> dict:
    """Label scoring of the first `reviews` test reviews by a course run's merged model (PyTorch) and by each of its
    GGUF files (llama.cpp): reviews per second after a warm-up and macro-F1, the GGUF files both one review at a
    time (the course's way) and `GGUF_BATCH` per decode, with the largest probability difference between the two; and what each engine computes with (`engine_features`). Run in a child process whose
    environment picks the kernels (`part_gguf`)."""
    cfg = make_config(profile, **overrides)
    run = RunLayout(Path(run_dir))
    test = prepare_splits(cfg).test.head(reviews)
    texts, gold = list(test["text"]), list(test["label"])
    rows = []
    for name, path in {"HF": run.merged, **gguf_files(run.merged, run)}.items():
        predictor = load_predictor(cfg, path)
        predictor.probabilities(texts[:8], progress=False)  # the first call's set-up is not label scoring
        by = {}
        for batch in ([1, GGUF_BATCH] if predictor.kind == "gguf" else [None]):
            predictor.cfg = dataclasses.replace(cfg, gguf_batch_size=batch or 1)
            start = time.perf_counter()
            by[batch] = predictor.probabilities(texts, progress=False)
            seconds = time.perf_counter() - start
            predictions = [cfg.labels[i] for i in by[batch].argmax(1)]
            rows.append({"format": name, "batch": batch, "reviews_per_second": len(texts) / seconds,
                         "predictions": predictions,
                         "macro_f1": classification_metrics(gold, predictions, cfg.labels)["macro_f1"]})
        if predictor.kind == "gguf":
            rows[-1]["drift_vs_one_at_a_time"] = float(abs(by[GGUF_BATCH] - by[1]).max())
        del predictor
    hf = rows[0]
    for row in rows:
        row["vs_hf"] = row["reviews_per_second"] / hf["reviews_per_second"]
        row["vs_hf_f1"] = verdict(gold, {**row, "method": row["format"]}, {**hf, "method": "HF"}, cfg.labels,
                                  cfg.seed)["outcome"]
    return {"reviews": len(texts), "engines": engine_features(), "env": {k: os.environ.get(k) for k in GGUF_ENV_KEYS},
            "rows": [{k: v for k, v in row.items() if k != "predictions"} for row in rows]}


GGUF_ENV_KEYS = (*LAPTOP_ENV, "LLAMA_CPP_LIB_PATH")


def avx2_llama_libs(cfg: CourseConfig) -> Path:
    """llama.cpp's AVX2 build (scripts/build_llama_cpp.sh's "avx2" flags, as on a laptop without AVX-512), its
    libraries unpacked for `LLAMA_CPP_LIB_PATH`: compiled once per machine and version (5-10 min on 2 cores)."""
    out = Path(cfg.cache_dir) / f"llama-cpp-avx2-{llama_cpp_version()}"
    if not (out / "libllama.so").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "build_llama_cpp.sh"), sys.executable, "avx2", str(out)],
                       check=True)
    return out


def part_gguf(bench: Bench) -> None:
    """Notebook 03's GGUF files against the merged model in label scoring (`gguf_speed`), in two settings, each in a
    child process: this CPU as it is (llama.cpp as `make setup` built it), and an AVX2 laptop (PyTorch limited to
    AVX2 by `LAPTOP_ENV`, llama.cpp's AVX2 build)."""
    if bench.run_dir is None:
        raise RuntimeError("The gguf part measures a course run's files: run it with the course part, or after one.")
    settings = {"this CPU": {}, "laptop (AVX2)": {**LAPTOP_ENV, "LLAMA_CPP_LIB_PATH": str(avx2_llama_libs(bench.cfg))}}
    out = {}
    for name, env in settings.items():
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "gguf.json"
            code = ("import json, sys\nfrom helpers.bench import gguf_speed\n"
                    "args = json.loads(sys.argv[1])\n"
                    "open(sys.argv[2], 'w').write(json.dumps(gguf_speed(*args)))")
            args = [bench.cfg.profile, json_safe(bench.overrides or {}), str(bench.run_dir), GGUF_REVIEWS]
            subprocess.run([sys.executable, "-c", code, json.dumps(args), str(result)],
                           cwd=ROOT, env={**os.environ, **env}, check=True)
            out[name] = json.loads(result.read_text())
    bench.results["gguf"] = out


def part_notebooks(bench: Bench) -> None:
    if bench.run_dir is not None:
        bench.results["course_run"], bench.results["notebooks"] = str(bench.run_dir), notebook_wall_times(bench.run_dir)
        bench.results["alternatives"] = alternatives(bench.run_dir)


def part_seeds(bench: Bench) -> None:
    """The profile trained again with the other seeds on the same split (the course run counts as its own seed), with
    the encoder fine-tuned on the same rows."""
    first = course_seed(bench.run_dir) if bench.run_dir is not None else None
    bench.results[f"{bench.cfg.profile}_seeds"] = accuracy_over_seeds(
        bench.cfg.profile, bench.seeds, Path(bench.cfg.run_dir), bench.overrides, first, encoder=True,
        progress=bench.progress)


LAPTOP_NOTEBOOKS = ["02", "03", "05"]  # what the LLM against MiniLM rests on; the rest comes from the course run


def central_verdicts(run_dir: Path) -> dict:
    """Notebook 05's central comparison of a course run in each domain (`alternatives.central_tests`), in short."""
    tests = (RunLayout(run_dir).metrics(ALTERNATIVES) or {}).get("llm_vs_alternatives", {})
    return {domain: {k: t[k] for k in ("llm", "llm_macro_f1", "rival", "rival_macro_f1", "difference", "low", "high",
                                       "outcome", "n")} for domain, t in tests.items()}


def part_laptop(bench: Bench) -> bool:
    """The course's central verdict as a laptop would reach it: notebooks 02, 03 and 05 again, from the course run,
    with training in fp32 and PyTorch limited to AVX2 (`LAPTOP_ENV`); both settings' verdicts in and out of domain
    side by side, and whether they agree."""
    if bench.run_dir is None:
        raise RuntimeError("The laptop part compares against a course run: run it with the course part, or after one.")
    knobs = {**(bench.overrides or {}), "precision": "fp32", "from_run": str(bench.run_dir)}
    run = course_with_memory(bench.cfg.profile, knobs, Path(bench.cfg.run_dir) / "laptop", only=LAPTOP_NOTEBOOKS,
                             env=LAPTOP_ENV)
    settings = {f"this CPU ({training_precision(bench.cfg)})": central_verdicts(bench.run_dir),
                "laptop (fp32, AVX2)": central_verdicts(Path(run["run_dir"]))}
    outcomes = [{d: v["outcome"] for d, v in verdicts.items()} for verdicts in settings.values()]
    bench.results["laptop"] = {"env": LAPTOP_ENV, "course": run, "verdicts": settings,
                               "same_verdicts": run["finished"] and all(o == outcomes[0] for o in outcomes)}
    return run["finished"]


def seed_decisions(cfg: CourseConfig, progress: bool = False) -> dict:
    """What the course's experiments decide with one training seed (`cfg.seed`) on the split of `cfg.split_seed`, each
    run as its chapter runs it: the masking ablation at its budget (01), the learning-rate sweep (02) and the LLM's
    learning curve at its sizes, each budget chosen on the eval split (05)."""
    splits, work = prepare_splits(cfg), Path(cfg.run_dir)
    ablation = run_masking_ablation(cfg, splits, work / "ablation", progress)
    masking = ablation_outcome(ablation, splits.test["label"], cfg)
    sweep = lr_sweep(cfg, splits, work / "sweep", progress)
    curve = learning_curve(cfg, splits.train, splits.test, [], work / "curve", progress, methods=(LLM,),
                           eval_df=splits.eval)
    return decisions_record(cfg.seed, ablation, masking, {f"{lr:g}": r["macro_f1"] for lr, r in sweep.items()}, curve)


def decisions_record(seed: int, ablation: dict, masking: dict, sweep: dict, curve: list[dict]) -> dict:
    """One seed's decisions as the decides part keeps them: each arm's test macro-F1 and eval curve with the masking
    verdict, each rate's eval macro-F1, and the LLM's trained points of the learning curve with their chosen step."""
    return {"seed": seed,
            "masking": {**{f"{arm}_macro_f1": r["macro_f1"] for arm, r in ablation.items()},
                        **{k: masking[k] for k in ("difference", "low", "high", "outcome")},
                        "eval_curve": {arm: r["eval_curve"] for arm, r in ablation.items()}},
            "sweep": sweep,
            "curve": [{"size": p["size"], "macro_f1": p["macro_f1"], "step": p["budget"]["step"]} for p in curve
                      if p["method"] == LLM and not p.get("reused") and p.get("budget")]}


def course_decisions(run_dir: Path) -> dict | None:
    """`seed_decisions` as a finished course run's chapters recorded them (01's ablation, 02's sweep, 05's learning
    curve), or None where one of them did not run: the course run counts as its own seed."""
    metrics = load_metrics(run_dir)
    ablation, sweep = metrics.get(MASKING, {}).get("ablation"), metrics.get(TRAINING, {}).get("lr_sweep")
    curve = metrics.get(ALTERNATIVES, {}).get("learning_curve")
    if not (ablation and sweep and curve and all("eval_curve" in arm for arm in ablation.values())):
        return None
    knobs = recorded_config(run_dir)
    cfg = make_config(knobs.pop("profile"), **knobs)
    masking = ablation_outcome(ablation, prepare_splits(cfg).test["label"], cfg)
    return {**decisions_record(cfg.seed, ablation, masking, {lr: r["macro_f1"] for lr, r in sweep.items()}, curve),
            "from_course_run": str(run_dir)}


def zero_shot_macro_f1(cfg: CourseConfig, progress: bool = False) -> float:
    """The base model's test macro-F1 by label scoring: the floor no point of the LLM's learning curve should fall
    below (it does not depend on the training seed)."""
    model, tokenizer = load_model(cfg)
    f1 = hf_predictor(model, tokenizer, cfg).evaluate(prepare_splits(cfg).test, progress=progress)["macro_f1"]
    del model
    free_memory()
    return f1


def decisions_over_seeds(runs: list[dict], zero_shot: float) -> dict:
    """The experiments' figures over the seeds: the masked arm's test macro-F1 and the masking verdict of each seed,
    each rate's eval macro-F1, and the LLM's test macro-F1 at each curve size, its lowest point against zero-shot."""
    sizes = sorted({p["size"] for p in runs[0]["curve"]})
    curve = {size: spread(p["macro_f1"] for run in runs for p in run["curve"] if p["size"] == size) for size in sizes}
    return {"seeds": [run["seed"] for run in runs], "zero_shot_macro_f1": zero_shot,
            "masked_macro_f1": spread(run["masking"]["masked_macro_f1"] for run in runs),
            "masking_outcomes": [run["masking"]["outcome"] for run in runs],
            "sweep": {lr: spread(run["sweep"][lr] for run in runs) for lr in runs[0]["sweep"]},
            "curve": curve,
            "curve_lowest_minus_zero_shot": min((p["macro_f1"] for run in runs for p in run["curve"]),
                                                default=zero_shot) - zero_shot}


def part_decides(bench: Bench) -> bool:
    """The course's experiments (`seed_decisions`) once for each seed on the split of the profile's own seed (the
    course run's seed read from its chapters, `course_decisions`), each seed kept and saved before the next starts
    (RESUME= goes on from the next one), and their figures over the seeds (`decisions_over_seeds`)."""
    base = make_config(bench.cfg.profile, **(bench.overrides or {}))
    out = bench.results.setdefault("decides", {"runs": []})
    first = course_decisions(bench.run_dir) if bench.run_dir is not None else None
    if first and not any(run["seed"] == first["seed"] for run in out["runs"]):
        out["runs"].append(first)
    if "zero_shot_macro_f1" not in out:
        out["zero_shot_macro_f1"] = zero_shot_macro_f1(base, bench.progress)
    for seed in bench.seeds:
        if any(run["seed"] == seed for run in out["runs"]):
            continue
        cfg = dataclasses.replace(base, seed=seed, split_seed=base.split_seed,
                                  run_dir=Path(bench.cfg.run_dir) / "decides" / f"seed{seed}")
        out["runs"].append(seed_decisions(cfg, bench.progress))
        if bench.save:
            bench.save(bench.results)
    out.update(decisions_over_seeds(out["runs"], out["zero_shot_macro_f1"]), profile=bench.cfg.profile)
    return True


def part_deep(bench: Bench) -> None:
    bench.results["deep_seeds"] = accuracy_over_seeds("deep", bench.seeds, Path(bench.cfg.run_dir), encoder=True,
                                                      progress=bench.progress)


def part_grid(bench: Bench) -> None:
    """LoRA on the top K blocks x training rows on the eval split (`diagnostics.layer_grid`), the grid that chose
    the workshop's `lora_layers` and `train_size`; notebook 02 draws the newest one."""
    bench.results["layer_grid"] = layer_grid(bench.cfg, Path(bench.cfg.run_dir) / "layer-grid", bench.progress)


def part_contention(bench: Bench, competitor: list[str] = COMPETITOR) -> bool:
    """Notebook 01 beside one competing process, against its wall time alone in the course run the parts read (this
    benchmark's course part, else `run_dir` or the latest finished run)."""
    loaded = notebook_under_load(bench.cfg.profile, bench.overrides, Path(bench.cfg.run_dir) / "contention",
                                 competitor=competitor)
    alone = load_metrics(bench.run_dir).get(CONTENTION_NOTEBOOK, {}) if bench.run_dir is not None else {}
    bench.results["contention"] = {**loaded, "alone_seconds": alone.get("wall_seconds"),
                                   "alone_run": str(bench.run_dir) if bench.run_dir is not None else None}
    return loaded["finished"]


# Notebook 06 needs its data (00) and its teacher (02); without 05's encoder it trains MiniLM on the gold rows itself.
DISTILL_NOTEBOOKS = ("00", "02", "06")


def trained_with(run_dir: Path) -> tuple[int, int] | None:
    """The seed and split seed notebook 02 of a course run trained with, or None if it did not run."""
    config = load_metrics(run_dir).get("02_logged_training", {}).get("config")
    return (config["seed"], config["split_seed"]) if config else None


def distill_over_seeds(runs: list[dict]) -> dict:
    """Notebook 06's figures over the seeds of `runs` (each its metrics file with its seed): every method's macro-F1
    per domain, and the three gaps the targets are about (teacher - student, student - MiniLM on the gold rows only,
    the student's reviews/s over the teacher's), each a `spread`."""
    def rows(run, domain):
        return {r["method"]: r for r in run["results"].get(domain, [])}
    domains = [d for d in ("test", "ood") if all(d in run["results"] for run in runs)]
    f1 = {d: {m: spread(rows(run, d)[m]["macro_f1"] for run in runs) for m in rows(runs[0], d)
              if all(m in rows(run, d) for run in runs)} for d in domains}
    test = [rows(run, "test") for run in runs]
    gaps = {"teacher_minus_student": spread(r[TEACHER]["macro_f1"] - r[STUDENT]["macro_f1"] for r in test),
            "student_minus_gold_only": spread(r[STUDENT]["macro_f1"] - r[GOLD_ONLY]["macro_f1"] for r in test),
            "speed_vs_teacher": spread(r[STUDENT]["reviews_per_second"] / r[TEACHER]["reviews_per_second"]
                                       for r in test)}
    return {"macro_f1": f1, "gaps": gaps}


def part_distill(bench: Bench) -> bool:
    """Notebook 06 live as the course runs it (`DISTILL_NOTEBOOKS`, in a run folder per seed), once for each seed on
    the split of the profile's own seed; its figures over the seeds (`distill_over_seeds`), written also to
    `bench.recorded` when given: the file the workshop's notebook 06 shows in place of its own run. A seed that
    finished is kept in the results (and saved) before the next starts, so RESUME= goes on from the next one."""
    base = make_config(bench.cfg.profile, **(bench.overrides or {}))
    out = bench.results.setdefault("distill", {"runs": []})
    for seed in bench.seeds:
        if any(run["seed"] == seed for run in out["runs"]):
            continue
        knobs = {**(bench.overrides or {}), "seed": seed, "split_seed": base.split_seed, "distillation": "live"}
        only = list(DISTILL_NOTEBOOKS)
        if bench.run_dir is not None and trained_with(bench.run_dir) == (seed, base.split_seed):
            knobs["from_run"], only = str(bench.run_dir), only[-1:]  # the course run is this seed's teacher already
        course = course_with_memory(bench.cfg.profile, knobs, Path(bench.cfg.run_dir) / "distill", only=only)
        if not course["finished"]:
            out["failed"] = course["run_dir"]
            return False
        metrics = load_metrics(course["run_dir"])[DISTILLATION]
        out["runs"].append({**{k: v for k, v in metrics.items() if k not in ("config", "versions")}, "seed": seed,
                            "run_dir": course["run_dir"], "peak_rss_bytes": course["peak_rss_bytes"],
                            "course_wall_seconds": course["wall_seconds"]})
        if bench.save:
            bench.save(bench.results)
    out.pop("failed", None)
    out.update(distill_over_seeds(out["runs"]), profile=bench.cfg.profile)
    if bench.recorded:
        write_recorded(bench.recorded, "distill", bench.results, out)
    return True


def write_recorded(path: Path, part: str, results: dict, out: dict) -> Path:
    """A part's figures (`out`) as the file notebook 06 shows in place of its own run: with the command that made
    them and the bench's date and machine."""
    recorded = {"command": f"make bench PARTS={part} PROFILE={out['profile']}", "date": results["date"],
                "cpus": results["cpus"], "threads": results["threads"], **out}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(json_safe(recorded), indent=1) + "\n", encoding="utf-8")
    return Path(path)


def few_gold_over_seeds(runs: list[dict]) -> dict:
    """The few-gold regime over the seeds of `runs`: per (pool, domain, gold rows) the student's, MiniLM alone's and
    the teacher's macro-F1 as `spread`s, and each seed's outcome against MiniLM alone and against the teacher."""
    keys = sorted({(p["pool"], p["domain"], p["gold_rows"]) for p in runs[0]["points"]})
    rows = []
    for pool, domain, size in keys:
        at = [next(p for p in run["points"] if (p["pool"], p["domain"], p["gold_rows"]) == (pool, domain, size))
              for run in runs]
        rows.append({"pool": pool, "domain": domain, "gold_rows": size,
                     **{k: spread(p[k] for p in at) for k in ("student", "gold_only", "teacher")},
                     "vs_gold_only": [p["vs_gold_only"]["outcome"] for p in at],
                     "vs_teacher": [p["vs_teacher"]["outcome"] for p in at]})
    return {"seeds": [run["seed"] for run in runs], "rows": rows}


def part_distill_few(bench: Bench) -> bool:
    """Distillation where it should pay (`distill.few_gold_regime`), the course run's fine-tuned LLM the teacher, once
    for each seed on the split of the profile's own seed (the seed draws the gold rows and trains the students), each
    seed saved before the next starts; the figures over the seeds (`few_gold_over_seeds`)."""
    if bench.run_dir is None:
        raise RuntimeError("The distill-few part needs a course run's fine-tuned LLM as its teacher: run it with the "
                           "course part, or after one.")
    base = make_config(bench.cfg.profile, **(bench.overrides or {}))
    out = bench.results.setdefault("distill_few", {"runs": []})
    for seed in bench.seeds:
        if any(run["seed"] == seed for run in out["runs"]):
            continue
        cfg = dataclasses.replace(base, seed=seed, split_seed=base.split_seed, from_run=str(bench.run_dir),
                                  run_dir=Path(bench.cfg.run_dir) / "distill-few" / f"seed{seed}")
        work = notebook_dir(cfg, DISTILLATION)  # copies in the course run's chapters: the teacher is 02's merged model
        out["runs"].append({"seed": seed, **few_gold_regime(cfg, prepare_splits(cfg), work, bench.progress)})
        if bench.save:
            bench.save(bench.results)
    out.update(few_gold_over_seeds(out["runs"]), profile=bench.cfg.profile, teacher_run=str(bench.run_dir))
    if bench.recorded_few:
        write_recorded(bench.recorded_few, "distill-few", bench.results, out)
    return True


# The course on reviews that all fill `max_length`: ~1,600 characters (~350 tokens) each, past the 230 tokens a review
# may take, so every review is cut to the full length and every batch is as long as a batch can be. Memory follows the
# length of a batch, not the number of rows: fewer rows keep the part's wall time to minutes (a 5-shot prompt of such
# reviews is ~1,500 tokens).
LONG_CHARACTERS = 1600
LONG_KNOBS = {"train_size": 240, "max_steps": 30, "test_size": 48, "ood_size": 48}


def long_review_file(path: Path, characters: int = LONG_CHARACTERS) -> Path:
    """The Amazon snippets with every review repeated to `characters` characters, as a CSV a learner could bring
    (text, label, group)."""
    df = load_amazon()
    df = df.assign(text=[((text + " ") * (characters // (len(text) + 1) + 1))[:characters] for text in df["text"]])
    path.parent.mkdir(parents=True, exist_ok=True)
    df[["text", "label", "group"]].to_csv(path, index=False)
    return path


def part_long(bench: Bench, only: list[str] | None = None) -> bool:
    """The course on `long_review_file` (with `LONG_KNOBS`), its peak memory and wall time sampled as the course
    part samples them: the bound the 4 GiB target is about, on a learner's long reviews."""
    folder = Path(bench.cfg.run_dir) / "long"
    path = long_review_file(folder / "long-reviews.csv")
    knobs = {**(bench.overrides or {}), **LONG_KNOBS, "dataset": str(path)}
    bench.results["long"] = {**course_with_memory(bench.cfg.profile, knobs, folder, only=only), "knobs": knobs,
                             "review_characters": LONG_CHARACTERS}
    return bench.results["long"]["finished"]


# Rare classes on data the course was never tuned on: two of VADER's corpora, thinned so that one class in eleven is
# neutral, each trained as the course trains (its decision rule chosen on the eval split by `decision_rule`) once on
# the distinct rows only and once with `oversample` filling the rare class's share.
RARE_CORPORA = ("movies", "nyt")
RARE_ROWS, RARE_NEUTRAL = 1000, 90


def rare_class_file(path: Path, corpus: str, rows: int = RARE_ROWS, neutral: int = RARE_NEUTRAL, seed: int = 0) -> Path:
    """`rows` rows of VADER's `corpus` (`data.load_hutto`): `neutral` neutral ones, the rest half negative and half
    positive, shuffled with `seed`, as a CSV a learner could bring (text, label)."""
    df = load_hutto(corpus)
    each = (rows - neutral) // 2
    parts = [df[df["label"] == label].sample(n, random_state=seed)
             for label, n in (("negative", each), ("positive", each), ("neutral", neutral))]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(parts).sample(frac=1, random_state=seed)[["text", "label"]].to_csv(path, index=False)
    return path


def rare_class_run(cfg: CourseConfig) -> dict:
    """Notebook 02 on `cfg`'s data: train, choose the decision rule on the eval split as the course does, score the
    test split with it. Returns the training rows (drawn and distinct), the rule, test macro-F1, per-class F1 and
    the test predictions with their gold labels."""
    splits = prepare_splits(cfg)
    model, tokenizer = load_model(cfg)
    trainer = make_trainer(cfg, model, tokenizer, to_chat_records(splits.train, cfg),
                           output_dir=Path(cfg.run_dir) / "trainer", disable_tqdm=True)
    seconds = train(trainer, len(splits.train))["train_seconds"]
    rule = choose_decision_rule(cfg, hf_predictor(trainer.model, tokenizer, cfg), splits.eval,
                                short_classes(splits, cfg))
    scored = hf_predictor(trainer.model, tokenizer, cfg, offsets=rule["offsets"]).evaluate(splits.test, progress=False)
    del trainer, model
    free_memory()
    return {"oversample": cfg.oversample, "train_rows": len(splits.train),
            "train_distinct": int(splits.train["text"].nunique()), "eval_rows": len(splits.eval),
            "train_seconds": seconds, "rule": rule["rule"], "rule_sentence": rule["sentence"],
            "macro_f1": scored["macro_f1"], "per_class_f1": {k: v["f1"] for k, v in scored["per_class"].items()},
            "predictions": scored["predictions"], "gold": list(splits.test["label"])}


def part_rare(bench: Bench) -> None:
    """`rare_class_run` on each `rare_class_file`, without and with oversampling, and the paired bootstrap between
    the two on the test split: the rare-class default, measured on data it was not chosen on."""
    folder, out = Path(bench.cfg.run_dir) / "rare", {}
    for corpus in RARE_CORPORA:
        path = rare_class_file(folder / f"{corpus}-rare.csv", corpus)
        arms = {name: rare_class_run(make_config(bench.cfg.profile, **{
                    **(bench.overrides or {}), "dataset": str(path), "oversample": oversample,
                    "run_dir": folder / f"{corpus}-{name}"}))
                for name, oversample in (("distinct", False), ("oversampled", True))}
        said = verdict(arms["oversampled"]["gold"], {**arms["oversampled"], "method": "oversampled"},
                       {**arms["distinct"], "method": "distinct rows only"}, bench.cfg.labels, bench.cfg.seed,
                       "the test split")
        out[corpus] = {"file": str(path), "verdict": said["sentence"],
                       **{name: {k: v for k, v in arm.items() if k not in ("predictions", "gold")}
                          for name, arm in arms.items()}}
    bench.results["rare"] = out


# The suite as the Makefile runs it (`make test`, then the inner loop `make test-fast`), each with a JUnit file of
# its per-test times: what the 8-minute and 60-second targets are about.
SUITE_TARGETS = ("test", "test-fast")


def suite_run(command: list[str], junit: Path) -> dict:
    """`command` (a pytest run that writes its JUnit file to `junit`): wall seconds, the exit status, the tests that
    ran, failed and were skipped, and the 25 slowest tests (setup, call and teardown together) with their seconds."""
    junit.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if not junit.exists():
        raise RuntimeError(f"{' '.join(command)} wrote no test report (exit {result.returncode}): "
                           f"{(result.stdout + result.stderr)[-1000:]}")
    cases = list(ElementTree.parse(junit).getroot().iter("testcase"))
    outcome = {case: next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
               for case in cases}
    slowest = sorted(cases, key=lambda c: -float(c.get("time", 0)))[:25]
    return {"command": " ".join(command), "returncode": result.returncode, "wall_seconds": seconds,
            "tests": len(cases), **{kind: sum(o == kind for o in outcome.values())
                                    for kind in ("passed", "failure", "error", "skipped")},
            "slowest": [{"test": f"{c.get('classname')}::{c.get('name')}", "seconds": float(c.get("time", 0))}
                        for c in slowest]}


def part_tests(bench: Bench) -> bool:
    """`make test` and `make test-fast` on this machine, one after the other and alone (their set-up is done)."""
    folder = Path(bench.cfg.run_dir) / "tests"
    runs = bench.results["tests"] = {}
    for target in SUITE_TARGETS:  # the JUnit file through the Makefile's ARGS, so that it reaches the suite's own
        junit = folder / f"{target}.xml"  # pytest only (PYTEST_ADDOPTS would reach nbval's pytest children too)
        runs[target] = suite_run(["make", target, f"ARGS=--junitxml={junit}"], junit)
    return all(run["returncode"] == 0 for run in bench.results["tests"].values())


# Labelling at scale: one file labelled by `classify` in one process, then on a local Ray with 1 .. cores workers
# (each worker a copy of the model with its share of the threads), for the encoder and the GGUF Q4_K_M.
SCALE_ROWS = {"smoke": 96}  # rows of the file per profile; any other profile: SCALE_ROWS_DEFAULT
SCALE_ROWS_DEFAULT = 1000
SCALE_WORKERS = {"smoke": (1,)}  # Ray's worker counts per profile (the test suite's); any other: 1 .. the cores


def scale_file(cfg: CourseConfig, path: Path, rows: int) -> Path:
    """`rows` reviews drawn in turn from the profile's test and training texts, as a CSV a user could bring (id, text)."""
    splits = prepare_splits(cfg)
    texts = pd.concat([splits.test["text"], splits.train["text"]]).tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": range(rows), "text": [texts[i % len(texts)] for i in range(rows)]}).to_csv(path, index=False)
    return path


def scale_models(bench: Bench, folder: Path) -> dict[str, Path]:
    """{kind: model} to label with: the course run's encoder (notebook 05) and GGUF Q4_K_M, else MiniLM fine-tuned
    here on 64 training rows (its speed is its size's, not its accuracy's) and the base model's own Q4_K_M."""
    encoder = layout(make_config(bench.cfg.profile, run_dir=bench.run_dir)).folder(ALTERNATIVES) / "encoder" \
        if bench.run_dir is not None else None
    if encoder is None or not encoder.is_dir():
        encoder = folder / "encoder"
        if not encoder.is_dir():
            finetune_encoder(bench.cfg, prepare_splits(bench.cfg).train.head(64), encoder)
    return {"encoder": encoder, "gguf": bench_models(bench.cfg, bench.run_dir, folder)[1]}


def part_classify_scale(bench: Bench) -> None:
    """Reviews/s of `classify` on one file: one process, then Ray with each number of workers up to the cores, for
    each of `scale_models`; with Ray's start-up seconds and the output lines that differ from the one process's."""
    cfg, folder = bench.cfg, Path(bench.cfg.run_dir) / "classify-scale"
    rows = SCALE_ROWS.get(cfg.profile, SCALE_ROWS_DEFAULT)
    source = scale_file(cfg, folder / "reviews.csv", rows)
    out = bench.results["classify_scale"] = {"rows": rows, "cores": os.cpu_count(), "threads": cfg.threads,
                                             "models": {}}
    for kind, model in scale_models(bench, folder).items():
        single = classify_file(cfg, source, folder / f"{kind}-local.csv", model, progress=False)
        runs = {}
        for workers in SCALE_WORKERS.get(cfg.profile, range(1, (os.cpu_count() or 1) + 1)):
            ray = classify_on_ray(cfg, source, folder / f"{kind}-ray-{workers}.csv", model, progress=False,
                                  workers=workers)
            runs[workers] = {"reviews_per_second": ray["reviews_per_second"], "seconds": ray["seconds"],
                             "ray_start_seconds": ray["ray_start_seconds"],
                             "lines_differing": lines_differing(single["output"], ray["output"])}
        out["models"][kind] = {"model": str(model), "single_process": single["reviews_per_second"], "ray": runs}
        if bench.save:
            bench.save(bench.results)


def lines_differing(one: Path, other: Path) -> int:
    """Lines of two files that differ, a missing line counted as one."""
    a, b = Path(one).read_bytes().splitlines(), Path(other).read_bytes().splitlines()
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


PARTS = {"course": part_course, "matmul": part_matmul, "training": part_training, "shapes": part_shapes,
         "inference": part_inference, "gguf": part_gguf, "notebooks": part_notebooks, "laptop": part_laptop, "decides": part_decides,
         "seeds": part_seeds, "deep": part_deep,
         "contention": part_contention, "grid": part_grid, "long": part_long, "rare": part_rare,
         "distill": part_distill, "distill-few": part_distill_few, "classify-scale": part_classify_scale, "tests": part_tests}
BENCH_PARTS = tuple(PARTS)  # in run order: the course first (the others read it), training before shapes


def run_bench(cfg: CourseConfig, run_dir: Path | None = None, steps: int = 8, parts=BENCH_PARTS, seeds=(42, 43, 44),
              progress: bool = True, overrides: dict | None = None, earlier: dict | None = None, save=None,
              recorded: Path | None = None, recorded_few: Path | None = None) -> dict:
    """Every figure of the selected `parts` (see `PARTS`) in one run on this machine, in `BENCH_PARTS` order whatever
    the order asked. The parts read the course run of the "course" part (in `cfg.profile`, with `overrides`),
    otherwise `run_dir`, default: the latest finished run of the profile. "seeds" and "deep" train with every one of
    `seeds` on one split. `save(results)` is called after each part, so a stopped benchmark loses only the part it
    was in; `earlier` (its saved figures) goes on from there: the parts it finished are not measured again. The
    "distill" part also writes its figures to `recorded`, and the "distill-few" part to `recorded_few`, where given."""
    import torch

    unknown = [name for name in parts if name not in PARTS]
    if unknown:
        raise ValueError(f"Unknown bench part(s) {', '.join(map(repr, unknown))}. Choose from: {', '.join(PARTS)}.")
    results = earlier or {"date": datetime.now().isoformat(timespec="seconds"), "profile": cfg.profile,
                          "model": cfg.model, "cpus": os.cpu_count(), "threads": cfg.threads, "allocator": allocator(),
                          "torch": torch.__version__}
    done = results.setdefault("parts_done", [])
    if earlier:
        results.setdefault("resumed", []).append(datetime.now().isoformat(timespec="seconds"))
    course = results.get("course", {}).get("run_dir") or results.get("course_run")
    bench = Bench(cfg, results, run_dir=Path(run_dir or course) if run_dir or course else latest_run(cfg.profile),
                  steps=steps, seeds=tuple(seeds), progress=progress, overrides=overrides, save=save,
                  recorded=recorded, recorded_few=recorded_few)
    for name, part in PARTS.items():
        if name in parts and name not in done:
            if part(bench) is not False:  # a part whose run did not finish says False: RESUME= runs it again
                done.append(name)
            results["ratios"] = ratios(results)
            if save:
                save(results)
    if "matmul" in parts:
        PARTS["matmul"](bench)  # again, after the other parts: keeps the higher peak
    results["ratios"] = ratios(results)
    if save:
        save(results)
    return results
