import json

import pytest

from helpers import bench
from helpers.runs import merge_json


def test_training_flops_count_frozen_weights_without_their_weight_gradient():
    flops = bench.training_flops(frozen_params=100, lora_params=10, tokens=2)
    assert flops == {"six_n": 6 * 110 * 2, "strict": (4 * 100 + 6 * 10) * 2}


def test_allocator_reads_ld_preload(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert bench.allocator() == "tcmalloc"
    monkeypatch.setenv("LD_PRELOAD", "")
    assert bench.allocator() == "glibc"


def test_matmul_peak_is_a_plausible_rate():
    flops = bench.matmul_peak(threads=1, size=256, repeats=2)
    assert 1e8 < flops < 1e13  # between 0.1 GFLOP/s and 10 TFLOP/s on one thread


def write_run(root, name, times):
    run = root / name
    for notebook, seconds in times.items():
        (run / notebook).mkdir(parents=True)
        merge_json(run / notebook / "metrics.json", {"wall_seconds": seconds} if seconds is not None else {"x": 1})
    return run


def test_latest_run_skips_unfinished_runs_and_sums_wall_times(tmp_path, monkeypatch):
    class Nb:
        def __init__(self, stem):
            self.stem = stem
    monkeypatch.setattr("helpers.bench.course_notebooks", lambda: [Nb("00_a"), Nb("01_b")])
    done = write_run(tmp_path, "20260101-000000-workshop", {"00_a": 10.0, "01_b": 20.5})
    write_run(tmp_path, "20260102-000000-workshop", {"00_a": 3.0, "01_b": None})  # newer, but 01 never finished
    write_run(tmp_path, "20260103-000000-smoke", {"00_a": 1.0, "01_b": 1.0})  # another profile
    assert bench.latest_run("workshop", tmp_path) == done
    assert bench.notebook_wall_times(done) == {"00_a": 10.0, "01_b": 20.5, "total": 30.5}
    assert bench.latest_run("full", tmp_path) is None


def test_ratios_and_targets_come_from_the_same_results():
    results = {"matmul_peak_flops": 100.0, "training": {"flops_per_second": {"six_n": 60.0, "strict": 40.0}},
               "inference": {"hf_scoring": {"reviews_per_second": 10.0}, "hf_generation": {"reviews_per_second": 4.0},
                             "gguf_scoring": {"reviews_per_second": 25.0}},
               "notebooks": {"total": 720.0}}
    assert bench.ratios(results) == pytest.approx({
        "training_utilisation_six_n": 0.6, "training_utilisation_strict": 0.4, "gguf_q4_k_m_vs_hf_fp32": 2.5,
        "scoring_vs_generation": 2.5, "course_minutes": 12.0})
    text = bench.format_results({"cpus": 2, "threads": 2, "allocator": "glibc", "torch": "x", "ratios":
                                 bench.ratios(results)})
    assert "gguf_q4_k_m_vs_hf_fp32: 2.500 (target >= 3: missed)" in text
    assert "course_minutes: 12.000 (target <= 10: missed)" in text
    assert "training_utilisation_six_n: 0.600 (target >= 0.5: met)" in text


def test_training_and_inference_figures_on_the_tiny_model(cfg, tmp_path):
    results = bench.run_bench(cfg, run_dir=None, steps=2, parts=("training", "inference"), progress=False)
    training = results["training"]
    assert training["steps"] == 2 and training["tokens_per_second"] > 0
    assert training["lora_params"] > 0 and training["frozen_params"] > training["lora_params"]
    inference = results["inference"]
    assert inference["reviews"] == cfg.test_size
    assert inference["gguf"].endswith("-Q4_K_M.gguf")
    for name in ("hf_scoring", "hf_generation", "gguf_scoring"):
        assert inference[name]["reviews_per_second"] > 0 and 0 <= inference[name]["accuracy"] <= 1
    assert inference["hf_scoring"]["invalid_rate"] == 0  # scoring always yields a label
    assert set(results["ratios"]) == {"gguf_q4_k_m_vs_hf_fp32", "scoring_vs_generation"}
    saved = bench.save_results(results, tmp_path / "bench")
    assert json.loads(saved.read_text())["inference"]["reviews"] == cfg.test_size


def test_the_alternatives_of_a_run_are_printed_best_first_with_the_human_row(tmp_path):
    run = tmp_path / "20260101-000000-workshop"
    rows = [{"method": "TF-IDF", "accuracy": 0.55, "macro_f1": 0.54, "train_seconds": 0.5, "reviews_per_second": 900.0,
             "size_mb": None, "predictions": ["x"]},
            {"method": "MiniLM fine-tuned", "accuracy": 0.70, "macro_f1": 0.68, "train_seconds": 80.0,
             "reviews_per_second": 150.0, "size_mb": 90.9}]
    (run / "05_practitioners_alternatives").mkdir(parents=True)
    merge_json(run / "05_practitioners_alternatives" / "metrics.json", {"results": {"test": rows}, "human": {"test": {
        "accuracy_mean": 0.76, "macro_f1_mean": 0.747, "macro_f1_sd": 0.021}}})
    alt = bench.alternatives(run)
    assert [r["method"] for r in alt["rows"]] == ["MiniLM fine-tuned", "TF-IDF"] and "predictions" not in alt["rows"][1]
    text = bench.format_results({"cpus": 2, "threads": 2, "allocator": "glibc", "torch": "x", "ratios": {},
                                 "alternatives": alt})
    assert "MiniLM fine-tuned" in text and "macro-F1 0.680  train    80.0 s    150.0 reviews/s    90.9 MB" in text
    assert "TF-IDF" in text and "train     0.5 s    900.0 reviews/s          -" in text  # no size: a dash
    assert "one human rater vs the others" in text and "macro-F1 0.747 ± 0.021" in text
    assert bench.alternatives(tmp_path) is None
