"""The course's speed, measured side by side on this machine (what `make bench` prints and saves).

- The matrix-multiply peak: the best fp32 FLOP/s torch reaches on square matrices with the course's threads.
- Training utilisation: 6 · parameters on the trainable path · tokens per second over that peak, and the stricter
  count (4 · frozen + 6 · LoRA parameters: frozen weights need no weight gradient). The path is the transformer
  blocks: the embedding is a lookup, and TRL's fused LM head (tied to it) projects only the answer positions.
- Classification throughput of the HF fp32 model and of GGUF Q4_K_M on the same reviews, and of label scoring vs
  generation on the same model, each with its accuracy.
- The wall time of each notebook of a course run (read from its metrics files, or measured by running the course),
  and the practitioner's alternatives that notebook 05 of that run measured beside the LLM: accuracy, macro-F1,
  training seconds, reviews per second and size of every method, and the human rater's agreement.
Every figure comes from the same helpers the notebooks call; nothing here has logic of its own beyond the timing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from datetime import datetime
from pathlib import Path

from transformers import TrainerCallback

from helpers.config import ROOT, CourseConfig
from helpers.data import prepare_splits, to_chat_records
from helpers.formats import compare_formats
from helpers.gguf import convert_to_gguf, quantize_gguf
from helpers.model import load_model, resolve_model
from helpers.predict import hf_predictor
from helpers.runs import ALTERNATIVES, RunLayout, _json_safe, course_notebooks, course_runs, load_metrics, run_course
from helpers.training import fresh_trainer, train


def allocator() -> str:
    """The memory allocator this process runs with: 'tcmalloc' / 'jemalloc' when preloaded, else 'glibc'."""
    preload = os.environ.get("LD_PRELOAD", "")
    return next((name for name in ("tcmalloc", "jemalloc") if name in preload), "glibc")


def matmul_peak(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """The best fp32 FLOP/s of `size` x `size` matrix products with torch on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def training_flops(frozen_params: int, lora_params: int, tokens: float) -> dict:
    """FLOPs of training on `tokens` tokens: the 6·N rule over every parameter on the trainable path, and the stricter
    useful count (forward + input gradient through frozen weights, forward + both gradients through LoRA)."""
    return {"six_n": 6 * (frozen_params + lora_params) * tokens,
            "strict": (4 * frozen_params + 6 * lora_params) * tokens}


class StepTimer(TrainerCallback):
    """perf_counter() at the end of every optimizer step."""

    def __init__(self):
        self.ends = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def training_throughput(cfg: CourseConfig, steps: int = 8, warmup: int = 2, progress: bool = False) -> dict:
    """Train the course's LoRA setup for `warmup + steps` steps; tokens/s (non-padding tokens, as TRL counts them),
    seconds per step and utilisation, measured over the last `steps` steps."""
    records = to_chat_records(prepare_splits(cfg).train, cfg)
    timed = dataclasses.replace(cfg, max_steps=warmup + steps, logging_steps=1)
    trainer = fresh_trainer(timed, records, Path(cfg.run_dir) / "bench-trainer", disable_tqdm=not progress)
    timer = StepTimer()
    trainer.add_callback(timer)
    history = train(trainer, len(records))["log_history"]
    tokens = {row["step"]: row["num_tokens"] for row in history if "num_tokens" in row}
    seconds = timer.ends[-1] - timer.ends[warmup - 1]
    measured_tokens = tokens[warmup + steps] - tokens[warmup]
    lora = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    embedding = trainer.model.get_input_embeddings().weight.numel()
    frozen = sum(p.numel() for p in trainer.model.parameters() if not p.requires_grad) - embedding
    return {"steps": steps, "batch_size": cfg.batch_size, "seconds_per_step": seconds / steps,
            "tokens_per_second": measured_tokens / seconds, "tokens_per_step": measured_tokens / steps,
            "frozen_params": frozen, "lora_params": lora, "embedding_params": embedding,
            "flops_per_second": {k: v / seconds for k, v in training_flops(frozen, lora, measured_tokens).items()}}


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
    """The targets' ratios, from figures measured in the same run."""
    out = {}
    training, peak = results.get("training"), results.get("matmul_peak_flops")
    if training and peak:
        out["training_utilisation_six_n"] = training["flops_per_second"]["six_n"] / peak
        out["training_utilisation_strict"] = training["flops_per_second"]["strict"] / peak
    inference = results.get("inference")
    if inference:
        hf, gen, gguf = (inference[k]["reviews_per_second"] for k in ("hf_scoring", "hf_generation", "gguf_scoring"))
        out["gguf_q4_k_m_vs_hf_fp32"] = gguf / hf
        out["scoring_vs_generation"] = hf / gen
    if results.get("notebooks"):
        out["course_minutes"] = results["notebooks"]["total"] / 60
    return out


TARGETS = {"training_utilisation_six_n": (">=", 0.5), "gguf_q4_k_m_vs_hf_fp32": (">=", 3.0),
           "scoring_vs_generation": (">=", 2.0), "course_minutes": ("<=", 10.0)}


def format_results(results: dict) -> str:
    """The figures as a short plain-text table, each ratio beside its target."""
    lines = [f"machine: {results['cpus']} CPUs, {results['threads']} threads, allocator {results['allocator']}, "
             f"torch {results['torch']}"]
    if "matmul_peak_flops" in results:
        lines.append(f"fp32 matmul peak: {results['matmul_peak_flops'] / 1e9:.1f} GFLOP/s")
    if "training" in results:
        t = results["training"]
        lines.append(f"training: {t['seconds_per_step']:.2f} s/step, {t['tokens_per_second']:.0f} tokens/s "
                     f"({t['tokens_per_step']:.0f} tokens/step, batch {t['batch_size']}), "
                     f"{t['frozen_params'] / 1e6:.1f} M frozen + {t['lora_params'] / 1e6:.2f} M LoRA parameters on the path "
                     f"({t['embedding_params'] / 1e6:.1f} M embedding left out)")
    if "inference" in results:
        inf = results["inference"]
        lines.append(f"classification of the same {inf['reviews']} reviews:")
        for name in ("hf_scoring", "hf_generation", "gguf_scoring"):
            r = inf[name]
            lines.append(f"  {name:<14} {r['reviews_per_second']:6.1f} reviews/s  accuracy {r['accuracy']:.3f}  "
                         f"macro-F1 {r['macro_f1']:.3f}  invalid {r['invalid_rate']:.3f}")
    if "notebooks" in results:
        lines.append(f"notebook wall times ({results['course_run']}):")
        lines += [f"  {name:<28} {seconds:7.1f} s" for name, seconds in results["notebooks"].items()]
    if results.get("alternatives"):
        alt = results["alternatives"]
        lines.append("every method on the same test reviews (notebook 05 of that run):")
        lines += [f"  {r['method']:<48} accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  train "
                  f"{_or_dash(r['train_seconds'], '{:7.1f} s')}  {_or_dash(r['reviews_per_second'], '{:7.1f} reviews/s')}"
                  f"  {_or_dash(r['size_mb'], '{:6.1f} MB')}" for r in alt["rows"]]
        if alt["human"]:
            h = alt["human"]
            lines.append(f"  {'one human rater vs the others':<48} accuracy {h['accuracy_mean']:.3f}  macro-F1 "
                         f"{h['macro_f1_mean']:.3f} ± {h['macro_f1_sd']:.3f}")
    for name, value in results["ratios"].items():
        op, target = TARGETS.get(name, (None, None))
        met = "" if op is None else (" (target %s %g: %s)" % (op, target, "met" if (value >= target if op == ">="
                                                                                       else value <= target) else "missed"))
        lines.append(f"{name}: {value:.3f}{met}")
    return "\n".join(lines)


def _or_dash(value, fmt: str) -> str:
    return fmt.format(value) if value is not None else "-".rjust(len(fmt.format(0)))


def save_results(results: dict, folder: Path = ROOT / "runs" / "bench") -> Path:
    """Write the figures to `runs/bench/bench-<timestamp>.json`, to compare over time."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(_json_safe(results), indent=2))
    return path


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
        f16 = convert_to_gguf(cfg, model_dir, Path(work_dir) / f"{model_dir.name}-f16.gguf")
        quantize_gguf(f16, gguf)
        f16.unlink()
    return model_dir, gguf


BENCH_PARTS = ("matmul", "training", "inference", "notebooks")


def run_bench(cfg: CourseConfig, course: bool = False, run_dir: Path | None = None, steps: int = 8,
              parts=BENCH_PARTS, progress: bool = True,
              overrides: dict | None = None) -> dict:
    """Every figure in one run on this machine. `course=True` runs the course in `cfg.profile` (with `overrides`)
    first and times it; otherwise the notebook times come from `run_dir` (default: the latest finished run of the
    profile)."""
    import torch

    results = {"date": datetime.now().isoformat(timespec="seconds"), "profile": cfg.profile, "model": cfg.model,
               "cpus": os.cpu_count(), "threads": cfg.threads, "allocator": allocator(), "torch": torch.__version__}
    if course:
        run_dir, finished = run_course(cfg.profile, overrides=overrides)
        if not finished:
            raise RuntimeError(f"The course failed; see {run_dir}. The benchmark needs a finished run.")
    run_dir = Path(run_dir) if run_dir else latest_run(cfg.profile)
    if "matmul" in parts:
        results["matmul_peak_flops"] = matmul_peak(cfg.threads)
    if "training" in parts:
        results["training"] = training_throughput(cfg, steps=steps, progress=progress)
    if "matmul" in parts:  # a shared machine's peak drifts: measure it again and keep the higher (the harder bar)
        results["matmul_peak_flops"] = max(results["matmul_peak_flops"], matmul_peak(cfg.threads))
    if "inference" in parts:
        model_dir, gguf = bench_models(cfg, run_dir, Path(cfg.run_dir))
        results["inference"] = inference_throughput(cfg, model_dir, gguf, prepare_splits(cfg).test, progress)
    if "notebooks" in parts and run_dir is not None:
        results["course_run"], results["notebooks"] = str(run_dir), notebook_wall_times(run_dir)
        results["alternatives"] = alternatives(run_dir)
    results["ratios"] = ratios(results)
    return results
