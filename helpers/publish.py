"""Executed notebooks committed from a real run, so that a reader sees every table, plot and verdict without running
anything (`make publish RUN=runs/<timestamp>-workshop`).

Each committed notebook in `notebooks/` (and `notebooks/solutions/`) takes the outputs its executed copy stored in the
run folder, cleaned of what informs nobody: stderr (library warnings, progress bars, load reports), progress widgets,
and this machine's absolute paths. Its metadata is stamped with the run, the profile, the date, the machine and a hash
of the notebook's code cells, so that a test can tell when outputs no longer belong to the code beside them
(`stale_reasons`). Never published: an output that is an error, or a run of the smoke profile.
"""
from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime
from pathlib import Path

import nbformat

from helpers.config import ROOT
from helpers.runs import RUN_NAME, folder_name, load_metrics, recorded_config

STAMP = "course_run"  # the notebook metadata key of the published run
INJECTED = "injected-parameters"  # papermill's tag on the cell it adds after the `parameters` cell
WIDGET = "application/vnd.jupyter.widget-view+json"  # a progress bar: nothing without a live kernel
SHOWS = re.compile(r"\bprint\(|\bplot_\w+\(|\bdisplay\(")  # a code cell that prints or plots must have an output


class PublishError(Exception):
    """A run that cannot be published, with what to do instead."""


def own_code(nb) -> list:
    """The notebook's own code cells (papermill's injected cell left out)."""
    return [c for c in nb.cells if c.cell_type == "code" and INJECTED not in c.metadata.get("tags", [])]


def code_cells(nb) -> list[str]:
    return [c.source for c in own_code(nb)]


def code_hash(nb) -> str:
    """sha256 of the code cells' sources, in order: what the published outputs were made with."""
    return hashlib.sha256("\n\0\n".join(code_cells(nb)).encode()).hexdigest()


def clean_text(text: str, replacements: dict[str, str]) -> str:
    """`text` with each progress line reduced to its final state and every absolute path of `replacements` made
    relative."""
    text = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


def clean_outputs(outputs: list, replacements: dict[str, str], where: str) -> list:
    """The outputs a reader learns from: stdout, results, figures and tables, with paths made relative; stderr and
    progress widgets dropped. An error output raises PublishError (`where` names the cell)."""
    kept = []
    for out in outputs:
        if out.output_type == "error":
            raise PublishError(f"{where} stored an error ({out.ename}: {out.evalue}): fix it, run the course again and "
                               f"publish that run.")
        if out.output_type == "stream":
            if out.name != "stdout":
                continue
            text = clean_text(out.text, replacements)
            if kept and kept[-1].output_type == "stream":
                kept[-1].text += text  # one block of printed text per cell, as a reader sees it
            elif text.strip():
                kept.append(nbformat.v4.new_output("stream", name="stdout", text=text))
            continue
        if WIDGET in out.get("data", {}):
            continue
        data = {mime: clean_text(value, replacements) if isinstance(value, str) and mime.startswith("text/") else value
                for mime, value in out.data.items()}
        out = nbformat.v4.new_output(out.output_type, data=data, metadata=out.get("metadata", {}),
                                     **({"execution_count": out.execution_count}
                                        if out.output_type == "execute_result" else {}))
        kept.append(out)
    return kept


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def run_stamp(run_dir: Path) -> dict:
    """What the published outputs come from: the run, its profile and date, and the machine (cores, CPU model, the
    kernels PyTorch used and the precision training computed in)."""
    match = RUN_NAME.fullmatch(run_dir.name)
    config = recorded_config(run_dir) or {}
    profile = config.get("profile") or (match["profile"] if match else None)
    if profile is None:
        raise PublishError(f"{run_dir} is not a course run folder (runs/<timestamp>-<profile>, as make course makes).")
    if profile == "smoke":
        raise PublishError(f"{run_dir} is a smoke run: its outputs come from a tiny random model. Publish a run of "
                           f"the workshop profile (make course).")
    metrics = load_metrics(run_dir)
    trained = metrics.get("02_logged_training", {})
    date = datetime.strptime(run_dir.name[:15], "%Y%m%d-%H%M%S").isoformat() if match else None
    return {"run": f"runs/{run_dir.name}", "profile": profile, "date": date,
            "machine": {"cores": os.cpu_count(), "cpu": cpu_model(),
                        "cpu_capability": next((m["cpu_capability"] for m in metrics.values()
                                                if m.get("cpu_capability")), None),
                        "precision": trained.get("precision") or config.get("precision")}}


def published(notebook: Path, executed: Path, stamp: dict, replacements: dict[str, str]):
    """`notebook` (the committed file) with the cleaned outputs of its `executed` copy and the run's `stamp`. The
    executed copy must have run this code, cell for cell; else PublishError."""
    nb, ran = nbformat.read(notebook, as_version=4), nbformat.read(executed, as_version=4)
    if code_cells(nb) != code_cells(ran):
        raise PublishError(f"{executed} ran other code than {notebook} holds now: run the course again with this code, "
                           f"then publish that run.")
    for cell, source in zip(own_code(nb), own_code(ran)):
        cell.outputs = clean_outputs(source.outputs, replacements, f"{executed.name}, cell [{source.execution_count}]")
        cell.execution_count = source.execution_count
    nb.metadata[STAMP] = {**stamp, "code_sha256": code_hash(nb)}
    return nb


def publish(run_dir: Path, notebooks: list[Path]) -> list[Path]:
    """Each of `notebooks` that `run_dir` executed, published into its committed file. Nothing is written unless every
    one can be (a stale or failed notebook leaves every committed file as it was)."""
    run_dir = Path(run_dir).resolve()
    stamp = run_stamp(run_dir)
    made_in = run_dir.parent.parent  # the checkout that made the run (runs/<name>), maybe another than this one
    replacements = {str(run_dir): stamp["run"], **{str(root) + "/": "" for root in (made_in, ROOT)},
                    **{str(root): "." for root in (made_in, ROOT)}, str(Path.home()): "~"}
    pairs = [(nb, run_dir / folder_name(nb) / nb.name) for nb in notebooks]
    missing = [str(executed) for _, executed in pairs if not executed.is_file()]
    if missing:
        raise PublishError(f"{run_dir} did not run {len(missing)} of these notebooks ({', '.join(missing)}): run "
                           f"them there (make course, make solutions FROM={stamp['run']}) or publish fewer.")
    done = [(nb, published(nb, executed, stamp, replacements)) for nb, executed in pairs]
    for nb, content in done:
        nbformat.write(content, nb)
    return [nb for nb, _ in done]


def stale_reasons(notebook: Path) -> list[str]:
    """Why a committed notebook's outputs cannot be trusted as they stand (empty when they can): no stamp, code
    changed since its outputs were made, an error output, a smoke run, or a cell that prints or plots with no output."""
    nb = nbformat.read(notebook, as_version=4)
    stamp = nb.metadata.get(STAMP)
    if not stamp:
        return ["never published: make publish RUN=runs/<timestamp>-workshop"]
    reasons = []
    if stamp.get("code_sha256") != code_hash(nb):
        reasons.append(f"its code changed after {stamp['run']} made its outputs: run the course again and publish")
    if stamp.get("profile") == "smoke":
        reasons.append("its outputs come from the smoke profile")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if any(out.output_type == "error" for out in cell.outputs):
            reasons.append(f"cell [{cell.execution_count}] stored an error")
        if SHOWS.search(cell.source) and not cell.outputs:
            reasons.append(f"a cell that prints or plots has no output: {cell.source.splitlines()[0][:60]!r}")
    return reasons


BOOK = ROOT / "book"  # the site's Sphinx configuration and start page
SITE = ROOT / "runs" / "book"  # where `make book` writes the site (runs/ is never committed)


def build_book(output: Path = SITE) -> Path:
    """The course site as static HTML in `output` (what `make book` does): Sphinx with myst-nb over the committed
    notebooks, solutions, README, TEACHING.md and docs/, from their stored outputs (nothing runs), offline. Returns the
    site's start page; a failed build raises PublishError with Sphinx's own last lines."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(BOOK), str(ROOT), str(output)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise PublishError(f"The site did not build (sphinx-build exit {done.returncode}):\n{done.stderr[-2000:]}")
    return Path(output) / "index.html"
