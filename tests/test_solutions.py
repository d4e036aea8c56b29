"""Every chapter's exercises have a worked solution in notebooks/solutions/, and every solution runs headless under
the smoke profile (papermill), started from the session's course run (`from_run`), and records an answer per
exercise. The solutions' module is handed out after the modules with slow tests (tests/conftest.py), when the worker
that runs the chapters has made what they read: the course run is built once and shared."""
import json
import re
import subprocess
import sys

import nbformat
import pytest

from helpers.runs import KERNEL, course_notebooks, execute_notebook, folder_name, solution_notebooks

CHAPTERS = course_notebooks()
SOLUTIONS = {nb.stem: nb for nb in solution_notebooks()}
SMOKE = {"01_label_masking": {"longer_steps": 6}}  # an exercise's own size, where smoke's sizes do not reach it


def exercises(chapter) -> list[str]:
    """The numbered exercises of a chapter's last cell."""
    last = nbformat.read(chapter, as_version=4).cells[-1].source
    return re.findall(r"^(\d+)\. ", last.split("## Exercises", 1)[1], flags=re.M)


def test_every_solution_is_a_chapter_s_and_every_chapter_has_one():
    assert sorted(SOLUTIONS) == [nb.stem for nb in CHAPTERS]
    assert folder_name(SOLUTIONS["04_few_shot_vs_finetuned"]) == "solutions/04_few_shot_vs_finetuned"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_a_solution_reads_like_its_chapter_with_a_section_per_exercise(chapter):
    nb = nbformat.read(SOLUTIONS[chapter.stem], as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and all(f"{name} = " in params[0].source for name in ("profile", "run_dir", "overrides"))
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "published with a run's answers"
    assert nb.metadata["kernelspec"]["name"] == KERNEL
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# Solutions · " + chapter.stem[:2])
    headings = re.findall(r"^## Exercise (\d+)$", "\n".join(c.source for c in nb.cells if c.cell_type == "markdown"),
                          flags=re.M)
    assert headings == exercises(chapter)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert all(f"exercise_{k}=" in code for k in headings), "record every exercise's figures and answer"


@pytest.mark.slow
class RunsFromTheCourseRun:
    """One chapter's solution under smoke, started from the session's course run. A class per chapter, because
    pytest-xdist hands out a class alone (`--dist loadscope`): the solutions are shared among the workers."""
    chapter = ""

    def test_it_runs_from_the_course_run_and_answers_every_exercise(self, course_run, tmp_path):
        source = course_run.through(self.chapter)
        nb, run = SOLUTIONS[self.chapter], tmp_path / "run"
        execute_notebook(nb, run / folder_name(nb) / nb.name, {
            "profile": "smoke", "run_dir": str(run), **SMOKE.get(self.chapter, {}),
            "overrides": {"from_run": str(source), "response_cache": str(tmp_path / "responses.jsonl")}})
        metrics = json.loads((run / folder_name(nb) / "metrics.json").read_text())
        assert metrics["config"]["profile"] == "smoke" and metrics["config"]["from_run"] == str(source)
        for k in exercises(next(c for c in CHAPTERS if c.stem == self.chapter)):
            answer = metrics[f"exercise_{k}"]
            assert ("figures" in answer) != ("skipped" in answer), answer
            assert isinstance(answer["answer"], str) and len(answer["answer"]) > 20, answer


for _chapter in CHAPTERS:  # one class per chapter, TestSolution00 ...: a chapter added later is picked up
    globals()[f"TestSolution{_chapter.stem[:2]}"] = type(f"TestSolution{_chapter.stem[:2]}", (RunsFromTheCourseRun,),
                                                          {"chapter": _chapter.stem})


@pytest.mark.slow
def test_the_solutions_command_runs_them_from_a_finished_run_and_prints_every_answer(course_run, tmp_path):
    source = course_run.through("00_setup_and_data")
    result = subprocess.run([sys.executable, "-m", "helpers", "solutions", "--profile", "smoke", "--only", "00",
                             "--from-run", str(source), "--run-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [line for line in result.stdout.splitlines() if line.startswith("solutions/00_setup_and_data, exercise")]
    assert len(answers) == len(exercises(CHAPTERS[0])), result.stdout[-2000:]
    assert f"Solutions: {tmp_path / 'run' / 'solutions'}" in result.stdout


def test_the_solutions_command_without_a_finished_run_says_what_to_run_first(tmp_path, monkeypatch):
    from helpers.cli import main

    monkeypatch.delenv("COURSE_FROM_RUN", raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["solutions", "--profile", "full", "--run-dir", str(tmp_path / "run")])
    assert str(stop.value) == ("No finished course run of profile 'full' under runs/ to start the solutions from: run "
                               "`make course` first, or pass FROM=runs/<timestamp>-full (--from-run).")
    assert not (tmp_path / "run").exists()
