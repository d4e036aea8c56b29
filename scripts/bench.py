"""Measure the course's speed on this machine, side by side in one run (what `make bench` does).

Prints the fp32 matmul peak, training utilisation, reviews per second of HF fp32 vs GGUF Q4_K_M and of label scoring
vs generation (with accuracies), each notebook's wall time, and every method notebook 05 measured beside the LLM
(accuracy, macro-F1, training seconds, reviews/s, size) with the human ceiling; saves runs/bench/bench-<time>.json.
"""
import argparse
import ast
from pathlib import Path

from helpers.bench import format_results, run_bench, save_results
from helpers.config import PROFILES, ROOT, make_config

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="workshop", choices=PROFILES)
    parser.add_argument("--course", action="store_true", help="run the whole course in this profile first and time it")
    parser.add_argument("--run-dir", type=Path, help="course run to read notebook times and the fine-tuned model from "
                                                     "(default: the latest finished run of the profile)")
    parser.add_argument("--steps", type=int, default=8, help="training steps to time (after 2 warm-up steps)")
    parser.add_argument("--parts", nargs="*", default=["matmul", "training", "inference", "notebooks"],
                        choices=["matmul", "training", "inference", "notebooks"])
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="config overrides to try, e.g. batch_size=16 lora_dropout=0.0")
    args = parser.parse_args()
    overrides = {name: ast.literal_eval(value) for name, value in (item.split("=", 1) for item in args.set)}
    cfg = make_config(args.profile, run_dir=ROOT / "runs" / "bench" / f"work-{args.profile}", **overrides)
    results = run_bench(cfg, course=args.course, run_dir=args.run_dir, steps=args.steps, parts=args.parts)
    print(format_results(results))
    print(f"saved: {save_results(results)}")
