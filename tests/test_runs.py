import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from helpers.runs import (course_estimate, course_notebooks, execute_notebook, load_metrics, new_run_dir, package_versions,
                          read_decision, record_metrics, recorded_config, run_course, write_decision)


def make_notebook(path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources], metadata={"language_info": {"name": "python"}})
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)
    return path


def test_new_run_dirs_never_collide(tmp_path):
    first, second = new_run_dir("smoke", tmp_path), new_run_dir("smoke", tmp_path)
    assert first != second and first.is_dir() and second.is_dir() and first.name.endswith("-smoke")


def test_record_metrics_merges_and_keeps_config_and_versions(cfg):
    record_metrics(cfg, "99_x", accuracy=0.5, nan=float("nan"))
    path = record_metrics(cfg, "99_x", f1=0.25)
    data = json.loads(path.read_text())
    assert (data["accuracy"], data["f1"], data["nan"]) == (0.5, 0.25, None)
    assert data["config"]["profile"] == "smoke" and data["versions"]["transformers"] == package_versions()["transformers"]
    assert load_metrics(cfg.run_dir) == {"99_x": data}


def test_a_step_run_again_with_other_settings_leaves_no_result_of_the_first(cfg):
    import dataclasses

    record_metrics(cfg, "99_x", accuracy=0.5, first_only=1)
    again = dataclasses.replace(cfg, max_steps=cfg.max_steps + 1)
    data = json.loads(record_metrics(again, "99_x", accuracy=0.75).read_text())
    assert data["accuracy"] == 0.75 and "first_only" not in data
    assert data["config"]["max_steps"] == cfg.max_steps + 1


def test_course_notebooks_are_numbered_and_in_order():
    names = [nb.name for nb in course_notebooks()]
    assert names and names == sorted(names) and names[0] == "00_setup_and_data.ipynb"


def test_execute_notebook_injects_parameters(tmp_path):
    nb = make_notebook(tmp_path / "p.ipynb", "x = 1", "print('x is', x)")
    out = tmp_path / "out" / "p.ipynb"
    execute_notebook(nb, out, {"x": 41})
    outputs = nbformat.read(out, as_version=4).cells[-1].outputs
    assert outputs[0]["text"] == "x is 41\n"


@pytest.mark.slow
def test_run_course_stops_at_a_failure_and_keeps_what_finished(tmp_path, capsys):
    ok = make_notebook(tmp_path / "00_ok.ipynb", "profile = ''\nrun_dir = ''",
                       "import pathlib; pathlib.Path(run_dir, '00_ok').mkdir(exist_ok=True); "
                       "pathlib.Path(run_dir, '00_ok', 'metrics.json').write_text('{}')")
    bad = make_notebook(tmp_path / "01_bad.ipynb", "profile = ''\nrun_dir = ''", "1 / 0")
    run_dir, finished = run_course("smoke", [ok, bad], root=tmp_path / "runs", overrides={"seed": 7, "labels": ("a",)})
    assert not finished and [run_dir] == list((tmp_path / "runs").iterdir())
    parameters = nbformat.read(run_dir / "00_ok" / "00_ok.ipynb", as_version=4).cells[1].source
    assert 'overrides = {"seed": 7, "labels": ["a"]}' in parameters  # the knobs reach every notebook
    assert "wall_seconds" in json.loads((run_dir / "00_ok" / "metrics.json").read_text())
    assert (run_dir / "01_bad" / "01_bad.ipynb").exists()
    assert "FAILED: 01_bad.ipynb: cell [3], ZeroDivisionError: division by zero" in capsys.readouterr().out


def test_run_course_hands_every_notebook_absolute_folders_since_each_runs_in_its_own(tmp_path, monkeypatch):
    ok = make_notebook(tmp_path / "00_ok.ipynb", "profile = ''\nrun_dir = ''\noverrides = {}", "print(run_dir)")
    monkeypatch.chdir(tmp_path)  # the caller's folder, not the notebook's: `--run-dir runs/x` from the repository
    run_dir, finished = run_course("smoke", [ok], run_dir=Path("rel"), overrides={"from_run": "finished"})
    assert finished and run_dir == tmp_path / "rel"
    parameters = nbformat.read(run_dir / "00_ok" / "00_ok.ipynb", as_version=4).cells[1].source
    assert f'run_dir = "{tmp_path / "rel"}"' in parameters and f'"from_run": "{tmp_path / "finished"}"' in parameters


def test_course_runs_are_the_timestamped_folders_newest_first(tmp_path):
    from helpers.runs import course_runs, latest_run

    for name in ("bench", "lab-smoke", "20240101-000000-smoke", "20240101-000000-smoke-1", "20250101-000000-workshop"):
        (tmp_path / name).mkdir()
    assert [p.name for p in course_runs("smoke", tmp_path)] == ["20240101-000000-smoke-1", "20240101-000000-smoke"]
    assert [p.name for p in course_runs(root=tmp_path)][0] == "20250101-000000-workshop"
    (tmp_path / "20240101-000000-smoke" / "02_logged_training").mkdir()
    (tmp_path / "lab-smoke" / "02_logged_training").mkdir()  # a JupyterLab folder never counts
    assert latest_run("02_logged_training", root=tmp_path) == tmp_path / "20240101-000000-smoke"
    assert latest_run("03_gguf_quantization", root=tmp_path) is None


def test_the_run_layout_is_spelled_out_once():
    from helpers.runs import RELATIVE, RunLayout

    run = RunLayout(Path("/r"))
    assert (run.adapter, run.merged, run.train_log) == (Path("/r/02_logged_training/adapter"),
                                                        Path("/r/02_logged_training/merged"),
                                                        Path("/r/02_logged_training/train_log.jsonl"))
    assert run.gguf("Q4_K_M") == Path("/r/03_gguf_quantization/model-Q4_K_M.gguf")
    assert run.metrics_file("04_few_shot_vs_finetuned") == Path("/r/04_few_shot_vs_finetuned/metrics.json")
    assert RELATIVE.gguf("f16") == Path("03_gguf_quantization/model-f16.gguf")


def test_layout_metrics_reads_what_record_metrics_wrote(cfg):
    from helpers.runs import layout, record_metrics

    assert layout(cfg).metrics("02_logged_training") is None
    record_metrics(cfg, "02_logged_training", train_seconds=3.0)
    assert layout(cfg).metrics("02_logged_training")["train_seconds"] == 3.0


def test_a_run_s_recorded_config_makes_the_config_again_but_where_it_ran(cfg):
    from helpers.config import make_config

    assert recorded_config(cfg.run_dir) is None
    made = make_config("smoke", run_dir=cfg.run_dir, labels=("bad", "good"), threads=7)
    record_metrics(made, "02_logged_training", train_seconds=3.0)
    knobs = recorded_config(cfg.run_dir)
    assert {"run_dir", "from_run", "cache_dir", "threads"}.isdisjoint(knobs)
    again = make_config(**knobs, run_dir=cfg.run_dir)
    assert again.labels == ("bad", "good") and again.model == "embedded:tiny"
    assert {k: v for k, v in again.to_dict().items() if k in knobs} == {k: v for k, v in made.to_dict().items()
                                                                      if k in knobs}


def test_latest_bench_is_the_newest_file_that_measured_the_key(tmp_path):
    import json

    from helpers.runs import latest_bench

    (tmp_path / "bench-20261201-090000.json").write_text(json.dumps({"layer_grid": [1]}))
    (tmp_path / "bench-20261201-100000.json").write_text(json.dumps({"training": {}}))
    (tmp_path / "bench-20261201-110000.json").write_text("{torn")
    path, results = latest_bench("layer_grid", tmp_path)
    assert path.name == "bench-20261201-090000.json" and results["layer_grid"] == [1]
    assert latest_bench("deep_seeds", tmp_path) == (None, None)


def finished_run(root, name, minutes_each, tokens):
    """A run folder as `run_course` leaves it: every notebook timed, notebook 00's token counts recorded."""
    run = root / name
    for nb in course_notebooks():
        (run / nb.stem).mkdir(parents=True)
        values = {"wall_seconds": minutes_each * 60}
        if nb.stem.startswith("00"):
            values["split_tokens"] = tokens
        (run / nb.stem / "metrics.json").write_text(json.dumps(values))
    return run


def test_course_estimate_scales_the_newest_finished_run_by_tokens(tmp_path):
    tokens = {"train": 200, "eval": 100, "test": 100}
    first = course_estimate("workshop", tokens, root=tmp_path)
    assert first["minutes"] is None and "No finished course run of profile 'workshop'" in first["sentence"]
    finished_run(tmp_path, "20261201-100000-workshop", 2, {"train": 100, "eval": 50, "test": 50})
    unfinished = finished_run(tmp_path, "20261201-110000-workshop", 1, tokens)
    (unfinished / course_notebooks()[-1].stem / "metrics.json").unlink()  # its last notebook never finished
    finished_run(tmp_path, "20261201-120000-smoke", 1, tokens)  # another profile
    current = finished_run(tmp_path, "20261201-130000-workshop", 1, tokens)
    estimate = course_estimate("workshop", tokens, current=current, root=tmp_path)
    minutes = 2 * len(course_notebooks()) * 2  # twice the tokens of the reference run
    assert estimate["minutes"] == minutes and estimate["reference"].endswith("20261201-100000-workshop")
    assert estimate["sentence"].startswith(f"Expect about {minutes} min for the whole course on this data (400 tokens")


def test_the_estimate_counts_notebook_06_as_it_will_run_here(tmp_path):
    """A reference run whose 06 showed recorded figures does not time a 06 that will train live, nor the other way."""
    tokens = {"train": 100, "eval": 50, "test": 50}
    recorded = finished_run(tmp_path, "20261201-100000-workshop", 1, tokens)
    stem = course_notebooks()[-1].stem
    (recorded / stem / "metrics.json").write_text(json.dumps({"wall_seconds": 60, "recorded": {"seeds": [42]}}))
    n = len(course_notebooks())
    assert course_estimate("workshop", tokens, root=tmp_path, distillation_live=False)["minutes"] == n
    alone = course_estimate("workshop", tokens, root=tmp_path, distillation_live=True)
    assert alone["minutes"] == n - 1 and "no finished run on this machine did: the estimate leaves its time out" in \
        alone["sentence"]
    live = finished_run(tmp_path, "20261130-100000-deep", 10, {"train": 50, "eval": 25, "test": 25})  # half the tokens
    timed = course_estimate("workshop", tokens, root=tmp_path, distillation_live=True)
    assert timed["minutes"] == n - 1 + 20 and timed["reference"] == str(recorded)
    assert f"so its time is scaled from {live.name}, where it did too" in timed["sentence"]


def test_a_decision_rule_is_saved_beside_each_model_folder_and_gguf_file(tmp_path):
    rule = {"rule": "offsets", "offsets": [0.0, 1.5, 0.0], "labels": ["negative", "neutral", "positive"], "eval": {},
            "sentence": "s", "ignored": 1}
    folder, gguf = tmp_path / "merged", tmp_path / "export" / "model-Q4_K_M.gguf"
    assert read_decision(folder) is None
    written = write_decision(rule, folder, gguf)
    assert written == [folder / "decision.json", tmp_path / "export" / "decision.json"]
    assert read_decision(gguf) == read_decision(folder) == {k: v for k, v in rule.items() if k != "ignored"}


def handed_out_run(folder: Path) -> Path:
    """A run folder as `make course` leaves it, small: each notebook's metrics and a model file, and the caches a
    later notebook never reads (checkpoints, sweep models, tokenized splits)."""
    for nb in course_notebooks():
        (folder / nb.stem).mkdir(parents=True)
        (folder / nb.stem / "metrics.json").write_text(json.dumps({"notebook": nb.stem}))
    (folder / "02_logged_training" / "merged").mkdir()
    (folder / "02_logged_training" / "merged" / "model.safetensors").write_bytes(b"weights" * 100)
    for cache in ("02_logged_training/trainer/checkpoint-4", "02_logged_training/sweep_3e-05",
                  "01_label_masking/trainer_masked", "prepared"):
        (folder / cache).mkdir(parents=True)
        (folder / cache / "big.bin").write_bytes(b"x" * 1000)
    return folder


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_notebook_started_from_a_finished_run_copies_what_came_before_it_and_never_writes_there(tmp_path):
    from helpers.config import make_config
    from helpers.runs import EXPORT, TRAINING, notebook_dir, start_from

    source = handed_out_run(tmp_path / "20261201-120000-smoke")
    before = tree(source)
    cfg = make_config("smoke", run_dir=tmp_path / "mine", from_run=str(source))
    out = notebook_dir(cfg, EXPORT)
    assert out == tmp_path / "mine" / EXPORT and out.is_dir() and not (out / "metrics.json").exists()
    copied = sorted(p.name for p in (tmp_path / "mine").iterdir())
    assert copied == ["00_setup_and_data", "01_label_masking", "02_logged_training", EXPORT]  # nothing after 03
    mine = tree(tmp_path / "mine")
    assert mine["02_logged_training/merged/model.safetensors"] == b"weights" * 100
    assert not [name for name in mine if "trainer" in name or "sweep" in name or "prepared" in name]  # no caches
    (tmp_path / "mine" / TRAINING / "metrics.json").write_text("{}")  # this run's own outputs stay its own
    assert start_from(cfg, "04_few_shot_vs_finetuned") == []  # what this run has is never copied over again
    assert tree(source) == before  # read only


def test_a_from_run_that_is_no_run_or_the_run_itself_is_one_clear_line(tmp_path):
    from helpers.config import make_config
    from helpers.runs import EXPORT, RunError, notebook_dir

    with pytest.raises(RunError, match=r"from_run=.*nowhere: not a finished run folder .* after `make course`, or a "
                                       r"folder that `python -m helpers unpack` made"):
        notebook_dir(make_config("smoke", run_dir=tmp_path / "mine", from_run=str(tmp_path / "nowhere")), EXPORT)
    source = handed_out_run(tmp_path / "run")
    with pytest.raises(RunError, match="is the run folder itself: give this run its own run_dir"):
        notebook_dir(make_config("smoke", run_dir=source, from_run=str(source)), EXPORT)


def test_make_lab_s_from_reaches_every_notebook_s_config(monkeypatch, tmp_path):
    from helpers.config import make_config

    monkeypatch.setenv("COURSE_FROM_RUN", str(tmp_path))
    assert make_config("smoke").from_run == str(tmp_path)
    assert make_config("smoke", from_run="runs/other").from_run == "runs/other"  # the notebook's own knob wins


def test_pack_leaves_the_caches_out_and_unpack_then_from_run_round_trips(tmp_path):
    from helpers.config import make_config
    from helpers.runs import FEWSHOT, RunError, notebook_dir, pack_run, unpack_run

    source = handed_out_run(tmp_path / "teacher" / "20261201-120000-smoke")
    archive = pack_run(source)
    assert archive == source.parent / "20261201-120000-smoke.tar" and not list(source.parent.glob("*.part"))
    unpacked = unpack_run(archive, tmp_path / "learner")
    assert unpacked == tmp_path / "learner" / "20261201-120000-smoke"
    kept = tree(unpacked)
    assert kept == {name: data for name, data in tree(source).items() if "big.bin" not in name}  # all but the caches
    cfg = make_config("smoke", run_dir=tmp_path / "learner" / "mine", from_run=str(unpacked))
    notebook_dir(cfg, FEWSHOT)
    assert tree(cfg.run_dir / "02_logged_training") == {n[len("02_logged_training/"):]: d for n, d in kept.items()
                                                         if n.startswith("02_logged_training/")}
    with pytest.raises(RunError, match=r"exists already: remove it, or unpack into another folder \(--into\)"):
        unpack_run(archive, tmp_path / "learner")
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(RunError, match="notes.txt: not a run archive. Pass the .tar that `python -m helpers pack`"):
        unpack_run(tmp_path / "notes.txt", tmp_path / "learner")
    with pytest.raises(RunError, match="pack=.*nothing: not a finished run folder .* after `make course`"):
        pack_run(tmp_path / "learner" / "mine" / "nothing")


def test_a_solution_starts_from_its_own_chapter_and_those_before_it_and_says_what_is_missing(tmp_path):
    from helpers.config import make_config
    from helpers.runs import (EXPORT, FEWSHOT, TRAINING, RunError, chapter_metrics, folder_name, notebook_dir,
                              solution, solution_notebooks)

    source = handed_out_run(tmp_path / "finished")
    cfg = make_config("smoke", run_dir=tmp_path / "mine", from_run=str(source))
    out = notebook_dir(cfg, solution(EXPORT))
    assert out == tmp_path / "mine" / "solutions" / EXPORT and out.is_dir()
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == sorted(
        [nb.stem for nb in course_notebooks()][:4] + ["solutions"])  # 00-03, not 04 and 05
    assert chapter_metrics(cfg, TRAINING) == {"notebook": TRAINING}
    with pytest.raises(RunError, match=r"04_few_shot_vs_finetuned/metrics.json is not in .*mine: run notebook 04 "):
        chapter_metrics(cfg, FEWSHOT)
    assert [folder_name(nb) for nb in solution_notebooks()] == [solution(nb.stem) for nb in course_notebooks()]


def test_json_safe_and_config_record_hold_what_json_cannot():
    """One conversion for every metrics file: sets sorted, paths as strings, non-finite floats None, and a class or a
    function (setfit's loss and distance in its TrainingArguments) by its qualified name."""
    import math
    from pathlib import Path

    import numpy as np

    from helpers.runs import config_record, json_safe

    value = {"targets": {"v_proj", "q_proj"}, "path": Path("/a/b"), "nan": math.nan, "n": np.int64(3),
             "loss": ValueError, "fn": json_safe, 1: (True, None, "x")}
    assert json_safe(value) == {"targets": ["q_proj", "v_proj"], "path": "/a/b", "nan": None, "n": 3,
                                "loss": "ValueError", "fn": "json_safe", "1": [True, None, "x"]}

    class Config:
        def to_dict(self):
            return value
    assert config_record(Config()) == json_safe(value)
