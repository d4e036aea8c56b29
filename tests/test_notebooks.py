"""Every notebook in notebooks/ runs headless (papermill, smoke profile), then nbval re-runs the executed copy and
compares the cells marked `# NBVAL_CHECK_OUTPUT` (counts, rendered examples, seeded metrics) with what the first run
stored: the same seed must give the same output. A notebook added later is picked up without editing this file.
The notebooks run once per test session into one folder (`course_run`, tests/conftest.py), in order as in
`make course`, and the command twins read what they wrote."""
import json
import subprocess
import sys

import nbformat
import pytest

from helpers.runs import KERNEL, course_notebooks, execute_notebook

pytestmark = pytest.mark.slow  # notebooks, servers, llama.cpp or course runs: left out of make test-fast

NOTEBOOKS = course_notebooks()


def checked_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" in c.source]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_parameterised_and_reads_as_a_chapter(notebook):  # its outputs: test_publish.py
    nb = nbformat.read(notebook, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "profile = " in params[0].source and "run_dir = " in params[0].source
    assert nb.metadata["kernelspec"]["name"] == KERNEL
    assert checked_cells(nb), "mark the deterministic cells with # NBVAL_CHECK_OUTPUT"
    assert nb.cells[0].cell_type == "markdown" and "What you will learn" in nb.cells[0].source
    assert "What just happened" in nb.cells[-1].source and "Exercises" in nb.cells[-1].source


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless_and_reproduces(notebook, course_run, tmp_path):
    out = course_run.notebook(notebook.stem)
    run_dir = course_run.run_dir
    executed = nbformat.read(out, as_version=4)
    assert all(c.outputs for c in checked_cells(executed)), "a checked cell stored no output: nbval would pass trivially"
    metrics = json.loads((run_dir / notebook.stem / "metrics.json").read_text())
    assert metrics["config"]["profile"] == "smoke"
    nbval = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-kernel-name", KERNEL, "-q",
                            "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(out)],
                           capture_output=True, text=True, cwd=notebook.parent)
    assert nbval.returncode == 0, nbval.stdout[-3000:]


def test_the_train_command_twin_gives_the_notebook_s_metrics(course_run, tmp_path):
    """`python -m helpers train` and notebook 02, same profile and seed: the same losses, predictions and scores."""
    run_dir = course_run.through("02_logged_training")
    notebook = json.loads((run_dir / "02_logged_training" / "metrics.json").read_text())
    result = subprocess.run([sys.executable, "-m", "helpers", "train", "--profile", "smoke", "--run-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    twin = json.loads((tmp_path / "02_logged_training" / "metrics.json").read_text())
    assert twin["test_predictions"] == notebook["test_predictions"]
    for key in ("accuracy", "macro_f1"):
        assert twin["fine_tuned"][key] == notebook["fine_tuned"][key]
    losses = [[row["loss"] for row in m["log_history"] if "loss" in row] for m in (twin, notebook)]
    assert losses[0] and losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_the_alternatives_command_twin_gives_the_notebook_s_rows(course_run, tmp_path):
    """`python -m helpers alternatives` in a new run folder started from the one notebook 05 ran in (`--from-run`):
    the same methods, scores and learning curve for the same seed."""
    run_dir = course_run.through("05_practitioners_alternatives")
    notebook_metrics = run_dir / "05_practitioners_alternatives" / "metrics.json"
    copy = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "helpers", "alternatives", "--profile", "smoke", "--run-dir",
                             str(copy), "--from-run", str(run_dir)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    notebook = json.loads(notebook_metrics.read_text())
    twin = json.loads((copy / "05_practitioners_alternatives" / "metrics.json").read_text())
    for domain, rows in notebook["results"].items():
        assert [r["method"] for r in twin["results"][domain]] == [r["method"] for r in rows]
        assert [r["macro_f1"] for r in twin["results"][domain]] == pytest.approx([r["macro_f1"] for r in rows],
                                                                                 abs=1e-6)
    assert twin["human"] == notebook["human"]
    assert [p["macro_f1"] for p in twin["learning_curve"]] == pytest.approx(
        [p["macro_f1"] for p in notebook["learning_curve"]], abs=1e-6)


def test_a_notebook_started_from_a_finished_run_gives_that_run_s_figures(course_run, tmp_path):
    """Notebook 04 in a new run folder, started from the course run (`from_run`, what `make lab FROM=` sets) with an
    empty answer cache: the same rows and verdict as in the course run, which it only reads."""
    source = course_run.through("04_few_shot_vs_finetuned")
    nb = next(p for p in NOTEBOOKS if p.stem == "04_few_shot_vs_finetuned")
    before = sorted(p.name for p in source.iterdir())
    execute_notebook(nb, tmp_path / "run" / nb.stem / nb.name, {
        "profile": "smoke", "run_dir": str(tmp_path / "run"),
        "overrides": {"from_run": str(source), "response_cache": str(tmp_path / "responses.jsonl")}})
    mine, theirs = (json.loads((run / nb.stem / "metrics.json").read_text()) for run in (tmp_path / "run", source))
    assert [(r["method"], r["accuracy"], r["macro_f1"]) for r in mine["results"]] == \
        [(r["method"], r["accuracy"], r["macro_f1"]) for r in theirs["results"]]
    assert mine["verdict"] == theirs["verdict"] and mine["config"]["from_run"] == str(source)
    assert (tmp_path / "responses.jsonl").stat().st_size > 0  # answered afresh, not from the course run's cache
    assert sorted(p.name for p in source.iterdir()) == before
