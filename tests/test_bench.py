import json
from pathlib import Path

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


def seeds_of(hf, q4, encoder=None, train_seconds=(100.0, 120.0)):
    runs = [{"seed": 42 + i, "train_rows": 480, "train_seconds": t,
             "macro_f1": {bench.LLM: a, bench.LLM_Q4: b, **({bench.ENCODER: encoder[i]} if encoder else {})},
             "accuracy": {bench.LLM: a, bench.LLM_Q4: b, **({bench.ENCODER: encoder[i]} if encoder else {})}}
            for i, (a, b, t) in enumerate(zip(hf, q4, train_seconds))]
    return bench.over_seeds(runs)


def test_spread_over_seeds_is_mean_and_sample_sd_of_each_method():
    seeds = seeds_of([0.70, 0.74], [0.68, 0.70], encoder=[0.66, 0.66])
    assert seeds["seeds"] == [42, 43]
    hf = seeds["macro_f1"][bench.LLM]
    assert hf.pop("values") == [0.70, 0.74]
    assert hf == pytest.approx({"n": 2, "mean": 0.72, "sd": 0.0282843, "min": 0.70, "max": 0.74}, abs=1e-6)
    assert seeds["macro_f1"][bench.ENCODER]["sd"] == 0.0 and seeds["train_seconds"]["max"] == 120.0
    assert bench.spread([0.5])["sd"] == 0.0


def test_ratios_and_targets_come_from_the_same_results():
    results = {"matmul_peak_flops": 100.0, "training": {"flops_per_second": {"six_n": 60.0, "strict": 40.0}},
               "inference": {"hf_scoring": {"reviews_per_second": 10.0}, "hf_generation": {"reviews_per_second": 4.0},
                             "gguf_scoring": {"reviews_per_second": 25.0}},
               "notebooks": {"total": 720.0}, "course": {"peak_rss_bytes": 3 * 2 ** 30},
               "workshop_seeds": seeds_of([0.70, 0.74], [0.68, 0.70]),
               "deep_seeds": seeds_of([0.80, 0.82], [0.79, 0.81], encoder=[0.72, 0.74], train_seconds=(600, 1900))}
    ratios = bench.ratios(results)
    assert ratios == pytest.approx({
        "training_utilisation_strict": 0.4, "training_utilisation_six_n": 0.6, "course_peak_memory_gib": 3.0,
        "course_minutes": 12.0, "workshop_macro_f1_hf": 0.72, "workshop_macro_f1_q4_k_m": 0.69,
        "workshop_training_minutes": 2.0, "deep_macro_f1_hf": 0.81, "deep_macro_f1_q4_k_m": 0.80,
        "deep_margin_over_encoder": 0.08, "deep_training_minutes": 1900 / 60,
        "gguf_q4_k_m_vs_hf_fp32": 2.5, "scoring_vs_generation": 2.5})
    assert list(ratios)[0] == "training_utilisation_strict"  # printed first
    text = bench.format_results({"cpus": 2, "threads": 2, "allocator": "glibc", "torch": "x", "ratios": ratios,
                                 "workshop_seeds": results["workshop_seeds"]})
    lines = text.splitlines()
    assert lines[1].startswith("training utilisation (strict count): 0.400 of the matmul peak; training utilisation "
                               "counts useful FLOPs as (4 · frozen + 6 · LoRA parameters) · tokens")
    assert "gguf_q4_k_m_vs_hf_fp32: 2.500 (target >= 3: missed)" in text
    assert "course_minutes: 12.000 (target <= 10: missed)" in text
    assert "course_peak_memory_gib: 3.000 (target <= 4: met)" in text
    assert "deep_margin_over_encoder: 0.080 (target >= 0.05: met)" in text
    assert "deep_training_minutes: 31.667 (target <= 30: missed)" in text
    assert "workshop_macro_f1_hf: 0.720 (target >= 0.75: missed)" in text
    assert f"  {bench.LLM:<42} 0.720 ± 0.028 [0.700, 0.740]  accuracy 0.720" in text
    course = {"run_dir": "runs/x", "wall_seconds": 600, "peak_rss_bytes": 3 * 2 ** 30, "interval_seconds": 0.5,
              "processes_at_peak": [{"process": "python -m ipykernel_launcher", "rss_bytes": 2 * 2 ** 30}],
              "kernel_peaks": {"00_setup_and_data": 2 ** 29, "02_logged_training": 3 * 2 ** 29}}
    text = bench.format_results({"cpus": 2, "threads": 2, "allocator": "glibc", "torch": "x", "ratios": {},
                                 "course": course})
    assert "at the peak: python -m ipykernel_launcher 2.00 GiB" in text
    assert "each notebook's kernel at its own peak: 00 0.50 GiB, 02 1.50 GiB" in text


def test_tree_memory_counts_a_child_process_and_its_own_child(tmp_path):
    import subprocess
    import sys

    # a child that starts a grandchild; each holds ~150 MB of touched memory for a moment
    hold = "b = bytearray(150 * 2 ** 20); import time; time.sleep(3)"
    child = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; p = subprocess.Popen([sys.executable, "
                                                    f"'-c', {hold!r}]); {hold}; p.wait()"])
    with bench.TreeMemory(child.pid, interval=0.1) as memory:
        child.wait()
    assert memory.peak > 300 * 2 ** 20
    assert len(memory.at_peak) == 2 and all(rss > 150 * 2 ** 20 for _, rss in memory.at_peak)
    assert list(memory.peaks)[0] == child.pid and len(memory.peaks) == 2  # each process once, the parent first
    assert all(150 * 2 ** 20 < rss < memory.peak for _, rss in memory.peaks.values())


def test_the_course_runs_as_make_course_runs_it_with_the_memory_of_all_its_processes(tmp_path):
    course = bench.course_with_memory("smoke", {"train_size": 36}, root=tmp_path, interval=0.2, only=["00"])
    assert course["finished"] and Path(course["run_dir"]).parent == tmp_path
    metrics = json.loads((Path(course["run_dir"]) / "00_setup_and_data" / "metrics.json").read_text())
    assert metrics["config"]["train_size"] == 36  # the knobs reached the notebook
    assert metrics["config"]["response_cache"] == str(Path(course["run_dir"]) / "bench-responses.jsonl")  # a cold cache
    names = [p["process"] for p in course["processes_at_peak"]]
    assert any("helpers course" in n for n in names) and any("ipykernel" in n for n in names)
    assert course["peak_rss_bytes"] == sum(p["rss_bytes"] for p in course["processes_at_peak"]) > 200 * 2 ** 20
    assert list(course["kernel_peaks"]) == ["00_setup_and_data"]  # one kernel ran, notebook 00's
    assert 100 * 2 ** 20 < course["kernel_peaks"]["00_setup_and_data"] < course["peak_rss_bytes"]


def test_seeds_train_again_on_the_same_split_and_score_hf_q4_and_encoder(tmp_path):
    first = {"seed": 1, "train_rows": 0, "train_seconds": None, "macro_f1": {bench.LLM: 0.1, bench.LLM_Q4: 0.1},
             "accuracy": {bench.LLM: 0.1, bench.LLM_Q4: 0.1}}
    seeds = bench.accuracy_over_seeds("smoke", (1, 2), tmp_path, overrides={"seed": 1}, first=first, encoder=True)
    assert seeds["seeds"] == [1, 2] and seeds["runs"][0] is first  # the course run counts as seed 1, once
    run = seeds["runs"][1]
    assert run["train_rows"] == 48 and run["train_seconds"] > 0 and run["encoder_train_seconds"] > 0
    assert set(run["macro_f1"]) == {bench.LLM, bench.LLM_Q4, bench.ENCODER}
    assert (tmp_path / "smoke-seed2" / "03_gguf_quantization" / "model-Q4_K_M.gguf").is_file()
    assert not list((tmp_path / "smoke-seed2" / "03_gguf_quantization").glob("*f16.gguf"))
    assert set(seeds["macro_f1"]) == {bench.LLM, bench.LLM_Q4}  # the encoder ran for one seed only: no spread


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
