import json
import math
import re

import pytest

from helpers.cli import main
from helpers.config import ROOT
from helpers.runs import course_notebooks
from helpers.teaching import (CHAPTERS, PLANS, TeachingError, key_name, lookup, plan_blocks, read_figures,
                              recorded_figures, render_guide)

WALL = {"00_setup_and_data": 20.0, "01_label_masking": 130.0, "02_logged_training": 400.0,
        "03_gguf_quantization": 150.0, "04_few_shot_vs_finetuned": 240.0, "05_practitioners_alternatives": 500.0,
        "06_distillation": 300.0}
PEAK = {name: (i + 1) * 2 ** 30 for i, name in enumerate(WALL)}  # 1.00 GiB, 2.00 GiB, ...
SOLVED = {"01_label_masking": 95.0}


def nested(keys: tuple, value):
    """The smallest metrics.json holding `value` at `keys` ("field=value" keys become a list with a decoy row)."""
    if not keys:
        return value
    field, _, wanted = keys[0].partition("=")
    if wanted:
        return [{field: "a decoy row"}, {field: wanted, **nested(keys[1:], value)}]
    return {keys[0]: nested(keys[1:], value)}


@pytest.fixture
def bench(tmp_path):
    """A bench file with a course part, the course run it timed (each notebook's predicted number = its index + 1)
    and a newer run in which `make solutions` timed chapter 01's solutions; returns (bench file, bench root, runs)."""
    runs, bench_root = tmp_path / "runs", tmp_path / "runs" / "bench"
    run = runs / "20990101-000000-workshop"
    for i, (name, chapter) in enumerate(CHAPTERS.items()):
        (run / name).mkdir(parents=True)
        (run / name / "metrics.json").write_text(json.dumps(nested(chapter.measured, i + 1)))
    for name, seconds in SOLVED.items():
        folder = runs / "20990102-000000-workshop" / "solutions" / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"wall_seconds": seconds}))
    bench_root.mkdir()
    results = {"date": "2099-01-01T00:00:00", "profile": "workshop", "cpus": 2, "threads": 2, "allocator": "tcmalloc",
               "torch": "2.13.0+cpu", "course": {"run_dir": str(run), "peak_rss_bytes": 6 * 2 ** 30,
                                                 "kernel_peaks": PEAK},
               "course_run": str(run), "notebooks": {**WALL, "total": sum(WALL.values())},
               "ratios": {"contention_slowdown": 1.5}}
    (bench_root / "bench-20990101-000000.json").write_text(json.dumps(results))
    (bench_root / "bench-20990102-000000.json").write_text(json.dumps({"parts_done": ["tests"], "tests": {}}))
    return bench_root / "bench-20990101-000000.json", bench_root, runs


def timetable(text: str) -> dict:
    """{notebook number: [wall time, kernel peak, solutions]} from a guide's timetable."""
    rows = re.findall(r"^\| \[(\d\d) [^]]+\]\(notebooks/[^)]+\) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", text, re.M)
    return {number: [cell.strip() for cell in cells] for number, *cells in rows}


def test_every_chapter_has_its_prose_and_its_predicted_number_is_one_the_notebook_records():
    assert list(CHAPTERS) == [nb.stem for nb in course_notebooks()]
    for nb in course_notebooks():
        assert f"{CHAPTERS[nb.stem].measured[0]}=" in nb.read_text().replace('"', "").replace(" ", "")


def test_the_timetable_is_the_bench_files_figures_and_the_predicted_numbers_its_run_s(bench):
    bench_file, bench_root, runs = bench
    figures = read_figures(bench_root=bench_root, runs_root=runs)  # the newest file *with a course part*
    assert figures["bench_file"] == str(bench_file) and figures["solutions_run"].endswith("20990102-000000-workshop")
    text = render_guide(figures)
    assert timetable(text) == {
        "00": ["20 s", "1.00 GiB", "not measured yet"], "01": ["130 s (2.2 min)", "2.00 GiB", "95 s (1.6 min)"],
        "02": ["400 s (6.7 min)", "3.00 GiB", "not measured yet"],
        "03": ["150 s (2.5 min)", "4.00 GiB", "not measured yet"],
        "04": ["240 s (4.0 min)", "5.00 GiB", "not measured yet"],
        "05": ["500 s (8.3 min)", "6.00 GiB", "not measured yet"],
        "06": ["300 s (5.0 min)", "7.00 GiB", "not measured yet"]}
    assert "| all, in order (`make course`) | 29.0 min | 6.00 GiB" in text
    for i, (name, chapter) in enumerate(CHAPTERS.items()):
        assert (f"Measured in `{figures['course_run']}/{name}/metrics.json` (`{key_name(chapter.measured)}`): "
                f"**{chapter.fmt.format(i + 1)}**.") in text
    assert "1.50 × its time alone" in text
    assert recorded_figures(text) == figures


def test_without_a_notebooks_part_the_wall_times_come_from_the_run_s_metrics(bench):
    bench_file, _, runs = bench
    results = json.loads(bench_file.read_text())
    del results["notebooks"]
    for name, seconds in WALL.items():
        metrics = runs / "20990101-000000-workshop" / name / "metrics.json"
        metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "wall_seconds": seconds + 1}))
    bench_file.write_text(json.dumps(results))
    figures = read_figures(bench_file, runs_root=runs)
    assert {name: nb["wall_seconds"] for name, nb in figures["notebooks"].items()} == {n: s + 1
                                                                                         for n, s in WALL.items()}


def test_the_plans_add_up_from_the_figures_and_the_slowest_notebooks_go_to_the_pack_first(bench):
    _, bench_root, runs = bench
    figures = read_figures(bench_root=bench_root, runs_root=runs)
    talk = sum(c.talk_minutes for c in CHAPTERS.values())
    run = {name: math.ceil(seconds / 60) for name, seconds in WALL.items()}
    short, half = PLANS
    blocks = plan_blocks(figures, short)
    packed = [name for name in CHAPTERS if not next(b for b in blocks if b["block"].startswith(name[:2]))["live"]]
    slowest = sorted(WALL, key=WALL.get, reverse=True)
    assert packed == sorted(slowest[:len(packed)])  # the slowest ones, and only as many as needed
    live_runs = sum(run[n] for n in WALL if n not in packed)
    assert sum(b["minutes"] for b in blocks) == short.opening_minutes + short.closing_minutes + talk + live_runs
    assert sum(b["minutes"] for b in blocks) <= short.budget_minutes
    with_one_more = talk + sum(run[n] for n in WALL if n not in packed[:-1])
    assert short.opening_minutes + short.closing_minutes + with_one_more > short.budget_minutes
    blocks = plan_blocks(figures, half)
    assert all(b["live"] for b in blocks if b["block"][:2].isdigit())  # everything live in a half-day
    assert sum(b["minutes"] for b in blocks) == (
        half.opening_minutes + half.closing_minutes + half.break_minutes + talk + sum(run.values())
        + len(CHAPTERS) * half.exercise_minutes + sum(math.ceil(s / 60) for s in SOLVED.values()))
    text = render_guide(figures)
    assert f"{sum(b['minutes'] for b in blocks)} min of {half.budget_minutes}" in text
    assert "solutions 2 (95 s)" in text and "solutions: run time not measured yet" in text


def test_the_committed_guide_is_what_the_generator_makes_from_the_figures_it_records():
    text = (ROOT / "TEACHING.md").read_text()
    figures = recorded_figures(text)
    assert render_guide(figures) == text, "TEACHING.md was edited by hand or is stale: run `make teaching`"
    assert re.fullmatch(r"runs/bench/bench-\d{8}-\d{6}\.json", figures["bench_file"])
    assert list(figures["notebooks"]) == list(CHAPTERS)
    assert all(nb["wall_seconds"] and nb["measured"] is not None for nb in figures["notebooks"].values())
    if (ROOT / figures["bench_file"]).exists():  # here, not in CI (runs/ is not committed): still the same figures
        def timed(f):
            return {n: (nb["wall_seconds"], nb["kernel_peak_bytes"], nb["measured"])
                    for n, nb in f["notebooks"].items()}
        assert timed(read_figures(ROOT / figures["bench_file"])) == timed(figures)


def test_no_bench_file_with_a_course_part_is_one_clear_line(tmp_path, bench, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeachingError, match=r"No make bench results with a course part .*run `make bench`") as err:
        read_figures(bench_root=tmp_path / "empty")
    assert "\n" not in str(err.value)
    _, bench_root, _ = bench
    assert main(["teaching", "--bench", str(bench_root / "bench-20990102-000000.json"),
                 "--output", str(tmp_path / "T.md")]) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: No make bench results with a course part") and message.count("\n") == 1
    assert not (tmp_path / "T.md").exists()


def test_the_command_writes_the_guide(bench, tmp_path, capsys):
    bench_file, _, _ = bench
    assert main(["teaching", "--bench", str(bench_file), "--output", str(tmp_path / "T.md")]) == 0
    assert (tmp_path / "T.md").read_text() == render_guide(read_figures(bench_file))
    assert "Teacher's guide:" in capsys.readouterr().out


def test_lookup_picks_a_row_of_a_list_and_says_none_when_a_run_did_not_record_it():
    rows = {"formats": [{"format": "HF fp32", "changed": 0}, {"format": "GGUF Q4_K_M", "changed": 10}]}
    assert lookup(rows, ("formats", "format=GGUF Q4_K_M", "changed")) == 10
    assert lookup(rows, ("formats", "format=Q5_K_M", "changed")) is None
    assert lookup({}, ("ablation", "masked", "macro_f1")) is None
