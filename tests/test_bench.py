import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import bench
from helpers.runs import merge_json

pytestmark = pytest.mark.slow  # notebooks, servers, llama.cpp or course runs: left out of make test-fast


def test_training_flops_count_the_path_actually_back_propagated():
    # 100 frozen below the lowest trainable block (forward only), 50 frozen from it upward, 10 LoRA, 2 tokens
    flops = bench.training_flops(frozen_below=100, frozen_above=50, lora_params=10, tokens=2)
    assert flops == {"six_n": 6 * 160 * 2, "strict": (2 * 100 + 4 * 50 + 6 * 10) * 2} == {"six_n": 1920, "strict": 920}


def test_path_parameters_split_frozen_weights_at_the_lowest_trainable_block(cfg):
    from peft import get_peft_model

    from helpers.model import load_model
    from helpers.training import build_lora_config

    top1 = dataclasses.replace(cfg, lora_layers=1)  # the tiny model has 2 blocks: LoRA on block 1 only
    model, _ = load_model(top1)
    model = get_peft_model(model, build_lora_config(top1, model))
    path = bench.path_parameters(model)
    # block 0: 36,864 weights of its seven projections (width 64, kv 32, MLP 128) + two RMSNorms of 64
    assert path["blocks"] == 2 and path["lowest_trained_block"] == 1 and path["frozen_below"] == 36_864 + 128
    assert path["lora_params"] == 4 * (128 + 96 + 96 + 128 + 192 + 192 + 192)  # r · (in + out) of each projection
    assert path["frozen_above"] == 36_864 + 128 + 64  # block 1 and the final norm; the embedding is left out
    assert path["embedding_params"] == model.get_input_embeddings().weight.numel()


def test_allocator_reads_ld_preload(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert bench.allocator() == "tcmalloc"
    monkeypatch.setenv("LD_PRELOAD", "")
    assert bench.allocator() == "glibc"


def test_every_part_is_one_function_of_one_table_and_an_unknown_part_is_refused_before_any_runs(cfg, monkeypatch):
    assert bench.BENCH_PARTS == tuple(bench.PARTS) == ("course", "matmul", "training", "shapes", "inference", "gguf",
                                                       "notebooks", "laptop", "decides", "seeds", "deep", "contention",
                                                       "grid", "long", "rare", "distill", "distill-few",
                                                       "classify-scale", "tests")
    assert all(callable(bench.PARTS[name]) for name in bench.BENCH_PARTS)
    ran = []
    monkeypatch.setattr(bench, "PARTS", {name: (lambda b, name=name: ran.append(name)) for name in bench.BENCH_PARTS})
    with pytest.raises(ValueError, match=r"Unknown bench part\(s\) 'speed'\. Choose from: course, matmul, training"):
        bench.run_bench(cfg, parts=("training", "speed"))
    assert ran == []
    bench.run_bench(cfg, parts=("notebooks", "shapes", "matmul", "training"))
    assert ran == ["matmul", "training", "shapes", "notebooks", "matmul"]  # table order; the peak measured again last


def test_a_stopped_bench_keeps_its_finished_parts_and_goes_on_from_there(cfg, monkeypatch, tmp_path):
    ran, stop = [], [True]

    def part(name):
        def run(b):
            ran.append(name)
            b.results[f"fake {name}"] = len(ran)
            if name == "shapes" and stop:  # stopped in the middle of the third part
                stop.clear()
                raise KeyboardInterrupt
        return run
    monkeypatch.setattr(bench, "PARTS", {name: part(name) for name in bench.BENCH_PARTS})
    path = tmp_path / "bench-x.json"
    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(cfg, parts=("matmul", "training", "shapes"), save=lambda r: bench.save_results(r, path))
    earlier = bench.earlier_bench(path)
    assert earlier["parts_done"] == ["matmul", "training"] and earlier["fake training"] == 2
    ran.clear()
    results = bench.run_bench(cfg, parts=("matmul", "training", "shapes"), earlier=earlier,
                              save=lambda r: bench.save_results(r, path))
    assert ran == ["shapes", "matmul"]  # only the unfinished part, then the peak again
    again = json.loads(path.read_text())
    assert again["parts_done"] == ["matmul", "training", "shapes"] and again["fake training"] == 2
    assert len(results["resumed"]) == 1 and again["date"] == earlier["date"]
    monkeypatch.setitem(bench.PARTS, "long", lambda b: False)  # its course run did not finish
    bench.run_bench(cfg, parts=("long",), earlier=again, save=lambda r: bench.save_results(r, path))
    assert "long" not in json.loads(path.read_text())["parts_done"]  # so RESUME= runs it again


def test_resuming_from_a_file_bench_did_not_write_says_what_to_pass(tmp_path, capsys):
    from helpers.cli import main

    with pytest.raises(bench.BenchError, match="Cannot resume from .*missing.json"):
        bench.earlier_bench(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text('{"a": 1}')
    with pytest.raises(bench.BenchError, match="records no finished bench parts"):
        bench.earlier_bench(other)
    assert main(["bench", "--profile", "smoke", "--resume", str(other)]) == 2
    assert "error: " in capsys.readouterr().err


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


TRAINING = {"steps": 8, "batch_size": 8, "seconds_per_step": 1.5, "rows_per_second": 5.333, "tokens_per_second": 240.0,
            "tokens_per_step": 360.0, "frozen_below": 60e6, "frozen_above": 40e6, "lora_params": 1.5e6,
            "embedding_params": 28e6, "blocks": 30, "lowest_trained_block": 20,
            "flops_per_second": {"six_n": 60.0, "strict": 40.0}}


def test_ratios_and_targets_come_from_the_same_results():
    results = {"matmul_peak_flops": 100.0, "training": TRAINING, "shapes": {"flops_per_second": 80.0},
               "inference": {"hf_scoring": {"reviews_per_second": 10.0}, "hf_generation": {"reviews_per_second": 4.0},
                             "gguf_scoring": {"reviews_per_second": 25.0}},
               "notebooks": {"total": 720.0}, "course": {"peak_rss_bytes": 3 * 2 ** 30},
               "workshop_seeds": seeds_of([0.70, 0.74], [0.68, 0.70], encoder=[0.66, 0.66]),
               "deep_seeds": seeds_of([0.80, 0.82], [0.79, 0.81], encoder=[0.72, 0.74], train_seconds=(600, 1900)),
               "contention": {"under_load_seconds": 300.0, "alone_seconds": 100.0}}
    ratios = bench.ratios(results)
    assert ratios == pytest.approx({
        "training_utilisation_strict": 0.4, "training_utilisation_strict_vs_shapes": 0.5,
        "training_utilisation_six_n": 0.6, "course_peak_memory_gib": 3.0,
        "course_minutes": 12.0, "workshop_macro_f1_hf": 0.72, "workshop_macro_f1_q4_k_m": 0.69,
        "workshop_margin_over_encoder": 0.06, "workshop_training_minutes": 2.0, "deep_macro_f1_hf": 0.81,
        "deep_macro_f1_q4_k_m": 0.80, "deep_margin_over_encoder": 0.08, "deep_training_minutes": 1900 / 60,
        "gguf_q4_k_m_vs_hf_fp32": 2.5, "scoring_vs_generation": 2.5, "contention_slowdown": 3.0})
    assert list(ratios)[:2] == ["training_utilisation_strict", "training_utilisation_strict_vs_shapes"]  # printed first
    text = bench.format_results({"cpus": 2, "threads": 2, "allocator": "glibc", "torch": "x", "ratios": ratios,
                                 "training": TRAINING, "workshop_seeds": results["workshop_seeds"]})
    lines = text.splitlines()
    assert lines[1].startswith("training utilisation (strict count): 0.400 of the matmul peak, 0.500 of the shape "
                               "limit at 5.33 training rows/s; the strict count is (2 · frozen parameters below the "
                               "lowest trainable block + 4 · frozen from it upward + 6 · LoRA) · tokens")
    assert "LoRA from block 20 of 30: 60.0 M frozen below it (forward only) + 40.0 M frozen from it upward" in text
    assert "gguf_q4_k_m_vs_hf_fp32: 2.500 (target >= 3: missed)" in text
    assert "course_minutes: 12.000 (target <= 10: missed)" in text
    assert "course_peak_memory_gib: 3.000 (target <= 4: met)" in text
    assert "training_utilisation_strict: 0.400 (target >= 0.7: missed)" in text
    assert "training_utilisation_strict_vs_shapes: 0.500 (target >= 0.8: missed)" in text
    assert "workshop_margin_over_encoder: 0.060 (target >= 0.05: met)" in text
    assert "workshop_macro_f1_q4_k_m: 0.690 (target >= 0.73: missed)" in text
    assert "deep_margin_over_encoder: 0.080 (target >= 0.05: met)" in text
    assert "deep_training_minutes: 31.667 (target <= 15: missed)" in text
    assert "contention_slowdown: 3.000 (target <= 2.5: missed)" in text
    assert "workshop_macro_f1_hf: 0.720 (target >= 0.75: missed)" in text
    assert f"  {bench.LLM:<42} 0.720 ± 0.028 [0.700, 0.740]  accuracy 0.720" in text
    course = {"run_dir": "runs/x", "wall_seconds": 600, "peak_rss_bytes": 3 * 2 ** 30, "interval_seconds": 0.5,
              "processes_at_peak": [{"process": "python -m ipykernel_launcher", "rss_bytes": 2 * 2 ** 30}],
              "kernel_peaks": {"00_setup_and_data": 2 ** 29, "02_logged_training": 3 * 2 ** 29}}
    text = bench.format_results({"cpus": 2, "threads": 2, "allocator": "glibc", "torch": "x", "ratios": {},
                                 "course": course})
    assert "at the peak: python -m ipykernel_launcher 2.00 GiB" in text
    assert "each notebook's kernel at its own peak: 00 0.50 GiB, 02 1.50 GiB" in text


def test_the_shape_limit_times_the_products_of_one_step_at_the_tiny_models_own_shapes(cfg):
    from transformers import AutoConfig

    from helpers.model import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(cfg))  # 2 blocks, width 64, 4 heads of 16, kv 2 heads, MLP 128
    shapes = bench.shape_limit(config, lora_r=4, tokens=10, threads=1, top=1, repeats=1)
    assert shapes["flops_per_second"] > 0 and shapes["blocks"] == 2 and shapes["trained_blocks"] == 1
    products = shapes["products"]
    done = {(p["projection"], p["weight"], p["pass"]) for p in products}
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for name in projections:
        assert {(w, kind) for n, w, kind in done if n == name} == {
            ("W", "forward"), ("W", "input_grad"), ("A", "forward"), ("A", "input_grad"), ("A", "weight_grad"),
            ("B", "forward"), ("B", "input_grad"), ("B", "weight_grad")}  # no weight gradient of a frozen W
    assert len(products) == len(done) == 7 * 8 and all(p["seconds"] > 0 for p in products)
    down_dx = next(p for p in products if (p["projection"], p["weight"], p["pass"]) == ("down_proj", "W", "input_grad"))
    assert (down_dx["m"], down_dx["k"], down_dx["n"]) == (10, 64, 128)  # dy (tokens × out) · W (out × in)
    a_dw = next(p for p in products if (p["projection"], p["weight"], p["pass"]) == ("q_proj", "A", "weight_grad"))
    assert (a_dw["m"], a_dw["k"], a_dw["n"], a_dw["transposed"]) == (4, 10, 64, "a")  # dyᵀ (r × tokens) · x
    # block 0 runs W forward only, block 1 everything: the strict count of the same path, by hand
    assert [p["blocks"] for p in products if p["weight"] == "W" and p["pass"] == "forward"] == [2] * 7
    assert shapes["flops_per_step"] == 10 * (2 * 36_864 + 4 * 36_864 + 6 * 4_096) == bench.training_flops(
        36_864, 36_864, 4_096, 10)["strict"]
    text = "\n".join(bench.format_shapes(shapes, peak=None))
    assert "LoRA r4 on 1 of 2 blocks, 1 threads" in text and "  k_proj        64→32: W fwd" in text
    assert "A dW" in text and "W dW" not in text


QUICK = [sys.executable, "-c", "import time; time.sleep(60)  # bench-test-competitor"]


def competitors() -> list:
    import psutil

    return [p for p in psutil.Process().children() if "bench-test-competitor" in " ".join(p.cmdline())]


def test_the_competing_process_runs_during_the_block_and_is_killed_even_when_the_block_fails():
    with pytest.raises(RuntimeError, match="the block failed"):
        with bench.competing_process(QUICK) as process:
            assert process.poll() is None and [p.pid for p in competitors()] == [process.pid]
            raise RuntimeError("the block failed")
    assert process.returncode is not None and competitors() == []


def test_contention_runs_the_notebook_beside_the_competitor_and_compares_with_the_run_alone(cfg, tmp_path, monkeypatch):
    alone = write_run(tmp_path, "20260101-000000-smoke", {"00_setup_and_data": 5.0, bench.CONTENTION_NOTEBOOK: 20.0})
    seen = []

    def notebook(profile, overrides, root, only):
        seen.append((profile, overrides, only, len(competitors())))
        write_run(root, "20260102-000000-smoke", {only[0]: 30.0})
        return {"run_dir": str(root / "20260102-000000-smoke"), "finished": True}
    monkeypatch.setattr(bench, "course_with_memory", notebook)
    run = bench.Bench(cfg, {}, alone, overrides={"ablation_steps": 2})
    bench.part_contention(run, competitor=QUICK)
    assert seen == [("smoke", {"ablation_steps": 2}, [bench.CONTENTION_NOTEBOOK], 1)] and competitors() == []
    c = run.results["contention"]
    assert (c["under_load_seconds"], c["alone_seconds"], c["alone_run"]) == (30.0, 20.0, str(alone))
    assert Path(c["run_dir"]).parent == Path(cfg.run_dir) / "contention"  # out of the way of runs/' course runs
    assert bench.ratios(run.results) == {"contention_slowdown": 1.5}

    def failing(*args, **kwargs):
        assert len(competitors()) == 1
        raise KeyboardInterrupt
    monkeypatch.setattr(bench, "course_with_memory", failing)
    with pytest.raises(KeyboardInterrupt):
        bench.part_contention(run, competitor=QUICK)
    assert competitors() == []


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


def test_the_laptop_part_runs_the_verdict_s_chapters_again_limited_to_avx2_in_fp32_and_compares(cfg, course_run,
                                                                                                 monkeypatch):
    run_dir = course_run.through("05_practitioners_alternatives")
    monkeypatch.setattr(bench, "LAPTOP_NOTEBOOKS", ["02", "05"])  # 03 adds nothing to what this test reads
    results = {}
    assert bench.part_laptop(bench.Bench(cfg, results, run_dir=run_dir, overrides=course_run.parameters["overrides"]))
    laptop = results["laptop"]
    again = Path(laptop["course"]["run_dir"])
    assert again.parent == Path(cfg.run_dir) / "laptop" and laptop["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
    metrics = json.loads((again / "05_practitioners_alternatives" / "metrics.json").read_text())
    assert metrics["config"]["precision"] == "fp32" and metrics["config"]["from_run"] == str(run_dir)
    trained = json.loads((again / "02_logged_training" / "metrics.json").read_text())
    assert trained["precision"] == "fp32" and trained["cpu_capability"] == "AVX2"  # the environment reached the kernel
    ours, theirs = laptop["verdicts"].values()
    assert set(ours) == set(theirs) == {"test", "ood"}
    assert ours["test"]["n"] == cfg.test_size and ours["ood"]["n"] == cfg.ood_size
    assert laptop["same_verdicts"] == all(ours[d]["outcome"] == theirs[d]["outcome"] for d in ours)
    assert bench.ratios(results)["laptop_same_verdicts"] == float(laptop["same_verdicts"])
    lines = bench.laptop_lines(laptop)
    assert len(lines) == 5 and lines[1].lstrip().startswith("this CPU (") and "laptop (fp32, AVX2)" in lines[3]


def test_the_course_run_counts_as_its_own_seed_of_the_decides_part(course_run, tmp_path):
    run_dir = course_run.through("05_practitioners_alternatives")
    first = bench.course_decisions(run_dir)
    assert first["seed"] == 42 and first["from_course_run"] == str(run_dir)
    assert list(first["sweep"]) == ["0.0001", "0.0003", "0.001", "0.003"]
    assert [p["size"] for p in first["curve"]] == [12] and first["curve"][0]["step"] in (0, 2, 3)
    ablation = json.loads((run_dir / "01_label_masking" / "metrics.json").read_text())["ablation"]
    assert first["masking"]["masked_macro_f1"] == ablation["masked"]["macro_f1"]
    assert first["masking"]["outcome"] in ("ahead", "tied", "behind")
    assert bench.course_decisions(tmp_path) is None  # no chapter ran there


@pytest.mark.slow
def test_the_decides_part_runs_each_experiment_per_seed_and_keeps_a_finished_seed(cfg):
    saved = []
    results = {}
    part = bench.Bench(cfg, results, seeds=(7, 8), save=lambda r: saved.append(len(r["decides"]["runs"])))
    assert bench.part_decides(part) is True
    d = results["decides"]
    assert [run["seed"] for run in d["runs"]] == [7, 8] and saved == [1, 2] and d["seeds"] == [7, 8]
    run = d["runs"][0]
    assert run["masking"]["outcome"] in ("ahead", "tied", "behind") and list(run["sweep"]) == ["0.0001", "0.0003",
                                                                                                "0.001", "0.003"]
    assert [p["size"] for p in run["curve"]] == list(cfg.learning_curve_llm_sizes)
    assert [s for s, _ in run["masking"]["eval_curve"]["masked"]] == list(cfg.ablation_points)
    assert d["curve_lowest_minus_zero_shot"] == pytest.approx(
        min(p["macro_f1"] for r in d["runs"] for p in r["curve"]) - d["zero_shot_macro_f1"])
    assert d["masked_macro_f1"]["values"] == [r["masking"]["masked_macro_f1"] for r in d["runs"]]
    ratios = bench.ratios(results)
    assert ratios["decides_masked_macro_f1_lowest"] == d["masked_macro_f1"]["min"]
    assert bench.decides_lines(d)[0] == "the experiments over seeds 7, 8 (smoke profile, one split):"
    assert bench.part_decides(part) is True and saved == [1, 2]  # both seeds kept: nothing trained again


def test_the_course_runs_as_make_course_runs_it_with_the_memory_of_all_its_processes(cfg):
    """The long-review part, which samples the course's memory as the course part does (here notebook 00 only)."""
    results = {}
    bench.part_long(bench.Bench(cfg, results, overrides={"seed": 7}), only=["00"])
    course = results["long"]
    folder = Path(cfg.run_dir) / "long"
    assert course["finished"] and Path(course["run_dir"]).parent == folder
    metrics = json.loads((Path(course["run_dir"]) / "00_setup_and_data" / "metrics.json").read_text())
    assert metrics["config"]["train_size"] == bench.LONG_KNOBS["train_size"] and metrics["config"]["seed"] == 7
    assert metrics["config"]["dataset"] == str(folder / "long-reviews.csv")  # the knobs reached the notebook
    assert metrics["config"]["response_cache"] == str(Path(course["run_dir"]) / "bench-responses.jsonl")  # a cold cache
    shortened = metrics["shortened"]["train"]
    assert shortened["shortened"] == shortened["reviews"] == bench.LONG_KNOBS["train_size"]  # every review at full length
    names = [p["process"] for p in course["processes_at_peak"]]
    assert any("helpers course" in n for n in names) and any("ipykernel" in n for n in names)
    assert course["peak_rss_bytes"] == sum(p["rss_bytes"] for p in course["processes_at_peak"]) > 200 * 2 ** 20
    assert list(course["kernel_peaks"]) == ["00_setup_and_data"]  # one kernel ran, notebook 00's
    assert 100 * 2 ** 20 < course["kernel_peaks"]["00_setup_and_data"] < course["peak_rss_bytes"]
    assert "long_reviews_peak_memory_gib" in bench.ratios(results)


def test_every_review_of_the_long_file_has_the_length_asked_and_keeps_its_label(tmp_path):
    from helpers.data import load_amazon

    df = pd.read_csv(bench.long_review_file(tmp_path / "long.csv", characters=900))
    original = load_amazon()
    assert list(df.columns) == ["text", "label", "group"] and len(df) == len(original)
    assert (df["text"].str.len() == 900).all() and df["text"].iloc[0].startswith(original["text"].iloc[0])
    assert list(df["label"]) == list(original["label"])


def test_rare_classes_train_on_the_distinct_rows_and_oversampled_with_the_course_s_decision_rule(cfg, monkeypatch):
    monkeypatch.setattr(bench, "RARE_CORPORA", ("nyt",))  # one of the two corpora: the same code, half the training
    results = {"profile": "smoke"}
    # 240 training rows want 80 neutral ones; the file's 90 neutral rows leave ~60 after the test and eval splits
    assert bench.part_rare(bench.Bench(cfg, results, overrides={"train_size": 240})) is None
    rare = results["rare"]
    assert list(rare) == ["nyt"]
    for corpus, arms in rare.items():
        df = pd.read_csv(arms["file"])
        assert len(df) == bench.RARE_ROWS and (df["label"] == "neutral").sum() == bench.RARE_NEUTRAL
        distinct, drawn = arms["distinct"], arms["oversampled"]
        assert not distinct["oversample"] and drawn["oversample"]
        assert distinct["train_rows"] == distinct["train_distinct"] < drawn["train_rows"] == 240
        assert drawn["train_distinct"] == distinct["train_distinct"]  # the same rows, the rare ones drawn again
        for arm in (distinct, drawn):
            assert set(arm["per_class_f1"]) == set(cfg.labels) and 0 <= arm["macro_f1"] <= 1
            assert arm["rule"] in ("argmax", "offsets") and arm["rule_sentence"].startswith("Decision rule")
        assert "oversampled" in arms["verdict"] and "distinct rows only" in arms["verdict"]
    r = bench.ratios(results)
    assert r["rare_lowest_class_f1"] == min(min(a["oversampled"]["per_class_f1"].values()) for a in rare.values())
    assert "rare_macro_f1_gain_from_oversampling" in r
    lines = bench.rare_lines(rare)
    assert lines[0].startswith("rare classes (90 neutral of 1000 rows)") and len(lines) == 1 + 3 * len(rare)


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


def test_training_shapes_and_inference_figures_on_the_tiny_model(cfg, tmp_path):
    results = bench.run_bench(cfg, run_dir=None, steps=2, parts=("shapes", "training", "inference"), progress=False)
    training = results["training"]
    assert training["steps"] == 2 and training["tokens_per_second"] > 0 and training["rows_per_second"] > 0
    assert training["lora_params"] > 0 and training["frozen_above"] > training["lora_params"]
    assert training["lowest_trained_block"] == 1 and training["frozen_below"] > 0  # smoke: the top block of two
    assert results["shapes"]["tokens"] == round(training["tokens_per_step"])  # the shapes of the step just timed
    inference = results["inference"]
    assert inference["reviews"] == cfg.test_size
    assert inference["gguf"].endswith("-Q4_K_M.gguf")
    for name in ("hf_scoring", "hf_generation", "gguf_scoring"):
        assert inference[name]["reviews_per_second"] > 0 and 0 <= inference[name]["accuracy"] <= 1
    assert inference["hf_scoring"]["invalid_rate"] == 0  # scoring always yields a label
    assert set(results["ratios"]) == {"training_utilisation_strict_vs_shapes", "gguf_q4_k_m_vs_hf_fp32",
                                      "scoring_vs_generation"}
    saved = bench.save_results(results, folder=tmp_path / "bench")
    assert json.loads(saved.read_text())["inference"]["reviews"] == cfg.test_size


def test_the_gguf_part_scores_every_format_in_both_settings_each_in_its_own_child(cfg, course_run, monkeypatch):
    import llama_cpp

    run_dir = course_run.through("03_gguf_quantization")
    installed = Path(llama_cpp.__file__).parent / "lib"  # the AVX2 build is compiled by make bench, not in the suite
    monkeypatch.setattr(bench, "avx2_llama_libs", lambda cfg: installed)
    results = {}
    bench.part_gguf(bench.Bench(cfg, results, run_dir=run_dir, overrides=course_run.parameters["overrides"]))
    this, laptop = results["gguf"]["this CPU"], results["gguf"]["laptop (AVX2)"]
    assert this["env"]["ATEN_CPU_CAPABILITY"] is None and laptop["env"] == {**bench.LAPTOP_ENV,
                                                                           "LLAMA_CPP_LIB_PATH": str(installed)}
    assert laptop["engines"]["PyTorch"] == "AVX2"
    for m in (this, laptop):
        assert [(r["format"], r["batch"]) for r in m["rows"]] == [("HF", None)] + [
            (f, b) for f in ("GGUF f16", "GGUF Q8_0", "GGUF Q4_K_M") for b in (1, bench.GGUF_BATCH)]
        assert all(r["reviews_per_second"] > 0 and 0 <= r["macro_f1"] <= 1 for r in m["rows"])
        assert all(r["drift_vs_one_at_a_time"] <= 1e-4 for r in m["rows"][2::2])  # the tiny model's kernels
    ratios = bench.ratios(results)
    assert set(ratios) == {f"gguf_q4_k_m_{batched}vs_hf_{where}" for batched in ("", "batched_")
                           for where in ("this_cpu", "laptop")} | {"gguf_batched_probability_drift"}
    assert ratios["gguf_q4_k_m_vs_hf_laptop"] == laptop["rows"][5]["vs_hf"]
    lines = bench.gguf_lines(results["gguf"])
    assert lines[0].startswith(f"label scoring of {this['reviews']} test reviews, this CPU (llama.cpp: ")
    assert " 1 per decode" in lines[2] and "16 per decode" in lines[3]
    assert "largest probability change vs one at a time" in lines[3]
    with pytest.raises(RuntimeError, match="measures a course run's files"):
        bench.part_gguf(bench.Bench(cfg, {}, run_dir=None))


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


def test_the_suite_part_times_a_pytest_run_counts_its_outcomes_and_names_its_slowest_tests(tmp_path):
    (tmp_path / "test_sample.py").write_text("import time\nimport pytest\n\n\ndef test_slow():\n    time.sleep(0.4)\n\n\n"
                                             "def test_quick():\n    pass\n\n\ndef test_broken():\n    assert False\n\n\n"
                                             "@pytest.mark.skip(reason='a skip the part must count')\n"
                                             "def test_skipped():\n    pass\n")  # a sample suite, run below
    junit = tmp_path / "junit" / "test.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
               f"--junitxml={junit}", str(tmp_path / "test_sample.py")]
    run = bench.suite_run(command, junit)
    assert run["returncode"] == 1 and run["tests"] == 4 and run["wall_seconds"] >= 0.4
    assert (run["passed"], run["failure"], run["error"], run["skipped"]) == (2, 1, 0, 1)
    assert run["slowest"][0]["test"] == "test_sample::test_slow" and run["slowest"][0]["seconds"] >= 0.4
    ratios = bench.ratios({"tests": {"test": run, "test-fast": {**run, "wall_seconds": 75.0}}})
    assert ratios == pytest.approx({"test_suite_minutes": run["wall_seconds"] / 60, "test_fast_seconds": 75.0})
    text = bench.format_results({"cpus": 2, "threads": 2, "allocator": "glibc", "torch": "x", "ratios": ratios,
                                 "tests": {"test": run}})
    assert "4 tests: 2 passed, 1 failed, 1 skipped" in text and "slowest: test_sample::test_slow 0 s" in text
    assert "test_fast_seconds: 75.000 (target <= 60: missed)" in text
    with pytest.raises(RuntimeError, match="wrote no test report"):
        bench.suite_run([sys.executable, "-c", "pass"], tmp_path / "none.xml")


def test_the_distill_part_runs_notebook_06_live_per_seed_and_writes_what_the_workshop_shows(cfg, tmp_path):
    """One seed of the part (notebooks 00, 02 and 06 as the course runs them), its file, then notebook 06 showing
    that file in place of its own run, and a second call that finds the seed done."""
    from helpers.distill import STUDENT, TEACHER
    from helpers.report import build_report
    from helpers.runs import DISTILLATION, course_notebooks, execute_notebook

    results, recorded = {"date": "2026-12-02T12:00:00", "cpus": 2, "threads": 2}, tmp_path / "recorded.json"
    part = bench.Bench(cfg, results, seeds=(7,), recorded=recorded, save=lambda r: None)
    assert bench.part_distill(part) is True
    d = results["distill"]
    run = d["runs"][0]
    assert run["seed"] == 7 and Path(run["run_dir"]).parent == Path(cfg.run_dir) / "distill"
    assert sorted(p.name for p in Path(run["run_dir"]).glob("[0-9][0-9]_*") if p.is_dir()) == [
        "00_setup_and_data", "02_logged_training", "06_distillation"]  # the chapter and what it needs, nothing else
    f1 = {m: r["macro_f1"] for m, r in ((r["method"], r) for r in run["results"]["test"])}
    assert d["macro_f1"]["test"][STUDENT] == {"n": 1, "mean": f1[STUDENT], "sd": 0.0, "min": f1[STUDENT],
                                              "max": f1[STUDENT], "values": [f1[STUDENT]]}
    assert d["gaps"]["teacher_minus_student"]["mean"] == pytest.approx(f1[TEACHER] - f1[STUDENT])
    assert bench.ratios(results)["distill_teacher_minus_student"] == d["gaps"]["teacher_minus_student"]["mean"]
    assert json.loads(recorded.read_text())["runs"][0]["results"] == run["results"]
    assert bench.distill_lines(d)[0] == "distillation (smoke profile, seeds 7), test macro-F1 mean ± sd (min-max):"
    assert bench.part_distill(part) is True and len(list((Path(cfg.run_dir) / "distill").iterdir())) == 1  # kept

    shown = tmp_path / "shown"  # as in the workshop, after notebook 02: its take-home cells ask that teacher
    notebook = next(nb for nb in course_notebooks() if nb.stem == DISTILLATION)
    execute_notebook(notebook, shown / DISTILLATION / notebook.name, {
        "profile": "smoke", "run_dir": str(shown),
        "overrides": {"distillation": "recorded", "distill_recorded": str(recorded), "from_run": run["run_dir"]}})
    text = (shown / DISTILLATION / notebook.name).read_text()
    assert "Recorded, not run here" in text and "seeds 7 on one split" in text and "Seed 7: " in text
    metrics = json.loads((shown / DISTILLATION / "metrics.json").read_text())
    assert metrics["results"] == run["results"] and metrics["recorded"]["seeds"] == [7]
    assert not (shown / DISTILLATION / "student").exists()  # nothing trained
    assert "Recorded, not run in this run" in build_report(shown)[0].read_text()

    knobs = tmp_path / "knobs.json"  # the command twin shows the same file and records the same figures
    knobs.write_text(json.dumps({"distillation": "recorded", "distill_recorded": str(recorded),
                                 "distill_few": "recorded"}))  # no teacher in this folder: the few-gold figures too
    twin = tmp_path / "twin"
    out = subprocess.run([sys.executable, "-m", "helpers", "distill", "--profile", "smoke", "--run-dir", str(twin),
                          "--config", str(knobs)], capture_output=True, text=True, check=True).stdout
    assert "Recorded, not run here" in out and "Seed 7: " in out
    assert "Recorded, not run here: `make bench PARTS=distill-few PROFILE=workshop` measured" in out
    again = json.loads((twin / DISTILLATION / "metrics.json").read_text())
    assert {k: again[k] for k in ("results", "verdict", "curve", "recorded")} == {
        k: metrics[k] for k in ("results", "verdict", "curve", "recorded")}


def test_the_distill_few_part_asks_the_course_run_s_teacher_for_each_seed(cfg, course_run, tmp_path):
    from helpers.distill import few_gold_section

    run_dir = course_run.through("02_logged_training")
    results, recorded = {"date": "2026-12-07T09:00:00", "cpus": 2, "threads": 2}, tmp_path / "few.json"
    assert bench.part_distill_few(bench.Bench(cfg, results, run_dir=run_dir, seeds=(7,), progress=False,
                                              recorded_few=recorded))
    d = results["distill_few"]
    shown = few_gold_section(dataclasses.replace(cfg, distill_few="recorded", seed=7), None, tmp_path, False, recorded)
    assert shown["points"] == d["runs"][0]["points"] and shown["rows"] == d["rows"]  # what notebook 06 shows
    assert shown["source"].startswith("Recorded, not run here: `make bench PARTS=distill-few PROFILE=smoke` measured")
    assert d["seeds"] == [7] and d["teacher_run"] == str(run_dir) and d["profile"] == "smoke"
    assert [(r["pool"], r["domain"], r["gold_rows"]) for r in d["rows"]] == sorted(
        (pool, domain, size) for pool in ("hutto:tweets", "in domain") for domain in ("ood", "test") for size in (6, 12))
    work = Path(cfg.run_dir) / "distill-few" / "seed7"
    assert (work / "02_logged_training" / "merged").is_dir()  # the teacher, copied in from the course run
    assert bench.distill_few_lines(d)[1].startswith("  hutto:tweets   ood     6 gold: student ")
    with pytest.raises(RuntimeError, match="needs a course run's fine-tuned LLM as its teacher"):
        bench.part_distill_few(bench.Bench(cfg, {}, run_dir=None))


def test_the_classify_scale_part_labels_one_file_in_one_process_and_on_ray_with_each_worker_count(cfg, tmp_path):
    cfg.threads = 1  # these tests share the machine: one thread for the one process and each Ray worker
    results, saved = {}, []
    bench.part_classify_scale(bench.Bench(cfg, results, save=saved.append))
    scale = results["classify_scale"]
    assert scale["rows"] == bench.SCALE_ROWS["smoke"] and set(scale["models"]) == {"encoder", "gguf"} and saved
    for kind, m in scale["models"].items():
        assert list(m["ray"]) == list(bench.SCALE_WORKERS["smoke"]) and m["single_process"] > 0
        for workers, run in m["ray"].items():
            assert run["lines_differing"] == 0, f"{kind} on {workers} Ray workers wrote what one process wrote"
            assert run["reviews_per_second"] > 0 and run["ray_start_seconds"] > 0
    reviews = pd.read_csv(Path(cfg.run_dir) / "classify-scale" / "reviews.csv")
    assert len(reviews) == scale["rows"] and reviews["text"].str.len().min() > 0
    ratios = bench.ratios(results)
    assert ratios["classify_gguf_ray_best_vs_one_process"] == pytest.approx(
        max(r["reviews_per_second"] for r in scale["models"]["gguf"]["ray"].values()) / scale["models"]["gguf"]["single_process"])
    lines = bench.scale_lines(scale)
    assert lines[0] == f"classify at scale ({scale['rows']} reviews, {scale['cores']} cores), reviews/s:"
    assert lines[1].startswith("  encoder  one process ") and "Ray starts in" in lines[1]
