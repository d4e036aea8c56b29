"""Every notebook in notebooks/ runs headless (papermill, smoke profile), then nbval re-runs the executed copy and
compares the cells marked `# NBVAL_CHECK_OUTPUT` (counts, rendered examples, seeded metrics) with what the first run
stored: the same seed must give the same output. A notebook added later is picked up without editing this file.
The notebooks share one run folder and run in order, as in `make course`: notebook 03 converts 02's model."""
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
def test_committed_notebook_is_clean_and_parameterised(notebook):
    nb = nbformat.read(notebook, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "profile = " in params[0].source and "run_dir = " in params[0].source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    assert nb.metadata["kernelspec"]["name"] == KERNEL
    assert checked_cells(nb), "mark the deterministic cells with # NBVAL_CHECK_OUTPUT"
    assert nb.cells[0].cell_type == "markdown" and "What you will learn" in nb.cells[0].source
    assert "What just happened" in nb.cells[-1].source and "Exercises" in nb.cells[-1].source


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("course") / "run"


def smoke_parameters(run_dir):
    """The smoke profile in the shared run folder, with a response cache of its own (never the developer's)."""
    return {"profile": "smoke", "run_dir": str(run_dir),
            "overrides": {"response_cache": str(run_dir.parent / "responses.jsonl")}}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless_and_reproduces(notebook, run_dir, tmp_path):
    out = run_dir / notebook.stem / notebook.name
    execute_notebook(notebook, out, smoke_parameters(run_dir))
    executed = nbformat.read(out, as_version=4)
    assert all(c.outputs for c in checked_cells(executed)), "a checked cell stored no output: nbval would pass trivially"
    metrics = json.loads((run_dir / notebook.stem / "metrics.json").read_text())
    assert metrics["config"]["profile"] == "smoke"
    nbval = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-kernel-name", KERNEL, "-q",
                            "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(out)],
                           capture_output=True, text=True, cwd=notebook.parent)
    assert nbval.returncode == 0, nbval.stdout[-3000:]


def test_the_train_command_twin_gives_the_notebook_s_metrics(run_dir, tmp_path):
    """`python -m helpers train` and notebook 02, same profile and seed: the same losses, predictions and scores."""
    if not (run_dir / "02_logged_training" / "metrics.json").exists():  # this test alone (-k): run the notebook here
        nb = next(p for p in NOTEBOOKS if p.stem == "02_logged_training")
        execute_notebook(nb, run_dir / nb.stem / nb.name, smoke_parameters(run_dir))
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


def test_the_alternatives_command_twin_gives_the_notebook_s_rows(run_dir, tmp_path):
    """`python -m helpers alternatives` on a copy of the run folder notebook 05 ran in: the same methods, scores and
    learning curve for the same seed."""
    import shutil

    notebook_metrics = run_dir / "05_practitioners_alternatives" / "metrics.json"
    if not notebook_metrics.exists():  # this test alone (-k): run the course's notebooks here first, in order
        for nb in NOTEBOOKS:
            if not (run_dir / nb.stem / "metrics.json").exists():
                execute_notebook(nb, run_dir / nb.stem / nb.name, smoke_parameters(run_dir))
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("05_practitioners_alternatives"))
    result = subprocess.run([sys.executable, "-m", "helpers", "alternatives", "--profile", "smoke", "--run-dir",
                             str(copy)], capture_output=True, text=True, timeout=600)
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
