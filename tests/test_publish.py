"""Committed notebooks carry a real run's outputs (`make publish`): cleaned, stamped, and never beside other code."""
import json
import subprocess
import sys

import nbformat
import pytest

from helpers import publish
from helpers.config import ROOT
from helpers.runs import course_notebooks, solution_notebooks

RUN = "20261207-120000-workshop"


def notebook(code: list[str]):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter")] + [nbformat.v4.new_code_cell(src) for src in code]
    nb.cells[1].metadata["tags"] = ["parameters"]
    return nb


def executed_copy(nb, run_dir, outputs: dict[int, list]):
    """`nb` as papermill leaves it in `run_dir`: its injected-parameters cell after the parameters cell, and the
    outputs of each code cell (by index among the notebook's own code cells)."""
    ran = nbformat.from_dict(json.loads(json.dumps(nb)))
    injected = nbformat.v4.new_code_cell(f'profile = "workshop"\nrun_dir = "{run_dir}"')
    injected.metadata["tags"] = [publish.INJECTED]
    ran.cells.insert(2, injected)
    own = [c for c in ran.cells if c.cell_type == "code" and publish.INJECTED not in c.metadata.get("tags", [])]
    for i, cell in enumerate(own):
        cell.outputs, cell.execution_count = outputs.get(i, []), i + 1
    return ran


def make_run(tmp_path, name=RUN, profile="workshop", outputs=None, code=None):
    """A committed notebook `chapter.ipynb` and a run folder that executed it, with a metrics file."""
    code = code or ['profile = "workshop"\nrun_dir = ""', 'print(table)', 'plot_curve(points)', 'x = 1']
    committed = tmp_path / "notebooks" / "07_chapter.ipynb"
    committed.parent.mkdir(parents=True, exist_ok=True)
    nb = notebook(code)
    nbformat.write(nb, committed)
    run_dir = tmp_path / "runs" / name
    (run_dir / "07_chapter").mkdir(parents=True)
    nbformat.write(executed_copy(nb, run_dir, outputs or {}), run_dir / "07_chapter" / "07_chapter.ipynb")
    (run_dir / "07_chapter" / "metrics.json").write_text(json.dumps({"cpu_capability": "AVX512"}))
    return committed, run_dir


def out(kind, **fields):
    return nbformat.v4.new_output(kind, **fields)


def test_a_published_notebook_keeps_what_a_reader_learns_from_and_its_stamp(tmp_path):
    committed, run_dir = make_run(tmp_path, outputs={
        1: [out("stream", name="stderr", text="UserWarning: something deprecated\n"),
            out("stream", name="stdout", text=f"Saved to {tmp_path}/runs/{RUN}/07_chapter/model\n"),
            out("stream", name="stdout", text="step 1\rstep 2\rstep 3 done\n"),
            out("stream", name="stdout", text=f"converter = {tmp_path}/.cache/convert.py\n"),  # the run's checkout
            out("display_data", data={publish.WIDGET: {"model_id": "x"}, "text/plain": "HBox()"})],
        2: [out("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 750x420>"}),
            out("execute_result", data={"text/html": f"<p>{ROOT}/notebooks</p>"}, execution_count=3)]})
    assert publish.publish(run_dir, [committed]) == [committed]
    nb = nbformat.read(committed, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 4  # papermill's injected cell is not published
    assert [o.output_type for o in code[1].outputs] == ["stream"]  # no stderr, no progress widget
    assert code[1].outputs[0].text == f"Saved to runs/{RUN}/07_chapter/model\nstep 3 done\nconverter = .cache/convert.py\n"
    assert code[2].outputs[0].data["image/png"] == "iVBORw0KGgo=" and code[2].outputs[1].data["text/html"] == "<p>notebooks</p>"
    stamp = nb.metadata[publish.STAMP]
    assert stamp["run"] == f"runs/{RUN}" and stamp["profile"] == "workshop" and stamp["date"] == "2026-12-07T12:00:00"
    assert stamp["machine"]["cpu_capability"] == "AVX512" and stamp["machine"]["cores"] >= 1
    assert stamp["code_sha256"] == publish.code_hash(nb) and publish.stale_reasons(committed) == []

    nb.cells[3].source += "\nprint('more')"  # code changed after the outputs were made
    nbformat.write(nb, committed)
    assert publish.stale_reasons(committed) == [
        f"its code changed after runs/{RUN} made its outputs: run the course again and publish"]


def test_a_cell_that_prints_or_plots_needs_an_output_and_an_unpublished_notebook_says_how(tmp_path):
    committed, run_dir = make_run(tmp_path, outputs={1: [out("stream", name="stdout", text="a table\n")]})
    assert publish.stale_reasons(committed) == ["never published: make publish RUN=runs/<timestamp>-workshop"]
    publish.publish(run_dir, [committed])
    assert publish.stale_reasons(committed) == ["a cell that prints or plots has no output: 'plot_curve(points)'"]


def test_nothing_is_published_from_an_error_other_code_a_smoke_run_or_a_missing_notebook(tmp_path):
    committed, run_dir = make_run(tmp_path, outputs={
        3: [out("error", ename="ValueError", evalue="bad", traceback=[])]})
    before = committed.read_text()
    with pytest.raises(publish.PublishError, match=r"cell \[4\] stored an error \(ValueError: bad\)"):
        publish.publish(run_dir, [committed])
    assert committed.read_text() == before  # nothing written

    committed, run_dir = make_run(tmp_path / "other")
    nb = nbformat.read(committed, as_version=4)
    nb.cells[-1].source = "x = 2"
    nbformat.write(nb, committed)
    with pytest.raises(publish.PublishError, match="ran other code than"):
        publish.publish(run_dir, [committed])

    committed, run_dir = make_run(tmp_path / "smoke", name="20261207-120000-smoke")
    with pytest.raises(publish.PublishError, match="is a smoke run"):
        publish.publish(run_dir, [committed])

    committed, run_dir = make_run(tmp_path / "missing")
    with pytest.raises(publish.PublishError, match="did not run 1 of these notebooks"):
        publish.publish(run_dir, [committed, committed.with_name("08_more.ipynb")])


def test_the_publish_command_asks_for_a_run():
    result = subprocess.run([sys.executable, "-m", "helpers", "publish"], capture_output=True, text=True)
    assert result.returncode == 2 and "make publish RUN=runs/<timestamp>-workshop" in result.stderr


@pytest.mark.parametrize("committed", course_notebooks() + solution_notebooks(),
                         ids=lambda p: str(p.relative_to(ROOT / "notebooks")))
def test_every_committed_notebook_carries_outputs_of_its_own_code_from_a_real_run(committed):
    assert publish.stale_reasons(committed) == []  # stamped, the same code, no error, not smoke, every print shown
