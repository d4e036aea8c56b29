"""Run folders, metrics files and headless notebook execution.

`make course` runs every notebook with papermill into `runs/<timestamp>-<profile>/<notebook>/`, next to the
`metrics.json` the notebook writes there. Metrics are merged in as each step finishes, so a crash keeps them.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import platform
import re
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

from helpers.config import ROOT, CourseConfig

NOTEBOOKS = ROOT / "notebooks"
KERNEL = "sentiment-course"
KEY_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "openai", "llama-cpp-python", "scikit-learn")


def package_versions(names=KEY_PACKAGES) -> dict:
    """Versions of the packages the course leans on, for the top of every notebook and every bug report."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def new_run_dir(profile: str, root: Path = ROOT / "runs") -> Path:
    """A fresh `runs/<timestamp>-<profile>/` folder; an earlier run is never reused or overwritten."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / (f"{stamp}-{profile}" if n == 0 else f"{stamp}-{profile}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"Could not make a new run folder under {root}.")


RUN_NAME = re.compile(r"\d{8}-\d{6}-(?P<profile>.+?)(-\d+)?")  # <timestamp>-<profile>[-n], as new_run_dir names them


def course_runs(profile: str = "*", root: Path = ROOT / "runs") -> list[Path]:
    """The run folders of `make course` and the commands ("*": of any profile), newest first. JupyterLab's
    `runs/lab-<profile>` and `runs/bench` are not course runs."""
    def matches(path: Path) -> bool:
        name = RUN_NAME.fullmatch(path.name)
        return path.is_dir() and name is not None and profile in ("*", name["profile"])
    return sorted((p for p in Path(root).glob("*") if matches(p)), reverse=True)


def latest_run(holding: str, profile: str = "*", root: Path = ROOT / "runs") -> Path | None:
    """The newest course run folder that holds `holding` (a path inside it), or None."""
    return next((run for run in course_runs(profile, root) if (run / holding).exists()), None)


def latest_bench(key: str, root: Path = ROOT / "runs" / "bench") -> tuple[Path, dict] | tuple[None, None]:
    """(file, figures) of the newest `make bench` results file under `root` that measured `key`, or (None, None)."""
    for path in sorted(Path(root).glob("bench-*.json"), reverse=True):
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if key in results:
            return path, results
    return None, None


# The notebooks, by the folder each keeps inside a run folder.
DATA, MASKING, TRAINING = "00_setup_and_data", "01_label_masking", "02_logged_training"
EXPORT, FEWSHOT, ALTERNATIVES = "03_gguf_quantization", "04_few_shot_vs_finetuned", "05_practitioners_alternatives"
DISTILLATION = "06_distillation"
# The worked solutions of a chapter's exercises keep their outputs in <run>/solutions/<chapter>/, beside the chapters.
SOLUTIONS = "solutions"


def solution(chapter: str) -> str:
    """The folder, inside a run folder, of the worked solutions of `chapter`'s exercises."""
    return f"{SOLUTIONS}/{chapter}"


@dataclass(frozen=True)
class RunLayout:
    """Where every artifact and metrics file of one run folder lives: the one place that spells the layout out.
    `RunLayout(Path())` gives the same paths relative to any run folder."""

    root: Path

    def folder(self, notebook: str) -> Path:
        return Path(self.root) / notebook

    def metrics_file(self, notebook: str) -> Path:
        return self.folder(notebook) / "metrics.json"

    def metrics(self, notebook: str) -> dict | None:
        """What `notebook` recorded in this run, or None if it has not run here."""
        path = self.metrics_file(notebook)
        return json.loads(path.read_text()) if path.exists() else None

    @property
    def adapter(self) -> Path:
        return self.folder(TRAINING) / "adapter"

    @property
    def merged(self) -> Path:
        return self.folder(TRAINING) / "merged"

    @property
    def train_log(self) -> Path:
        return self.folder(TRAINING) / "train_log.jsonl"

    def gguf(self, fmt: str) -> Path:
        """The exported model in `fmt` ("f16", "q8_0" by the converter; "Q4_K_M" by the quantizer)."""
        return self.folder(EXPORT) / f"model-{fmt}.gguf"


RELATIVE = RunLayout(Path())
DECISION = "decision.json"  # the decision rule chosen on the eval split, beside every model it belongs to


def decision_file(model_path: Path) -> Path:
    """Where the decision rule of a model lives: in its folder, or beside its GGUF file."""
    model_path = Path(model_path)
    return (model_path.parent if model_path.suffix == ".gguf" else model_path) / DECISION


def write_decision(rule: dict, *model_paths: Path) -> list[Path]:
    """The rule (`helpers.evaluate.decision_rule`) beside each model, so every engine that loads it decides alike."""
    written = []
    for path in model_paths:
        target = decision_file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({k: rule[k] for k in ("rule", "offsets", "labels", "eval", "sentence")}, indent=2))
        written.append(target)
    return written


def read_decision(model_path: Path) -> dict | None:
    """The decision rule stored with a model, or None (the most probable label)."""
    path = decision_file(model_path)
    return json.loads(path.read_text()) if path.is_file() else None


def disk_mb(*paths: Path) -> float:
    """Megabytes on disk of files and folders (every file below a folder)."""
    files = [f for p in map(Path, paths) for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def layout(cfg: CourseConfig) -> RunLayout:
    return RunLayout(Path(cfg.run_dir))


def notebook_dir(cfg: CourseConfig, notebook: str) -> Path:
    """Where one notebook keeps its metrics and artifacts inside the run folder; with `cfg.from_run`, first the
    outputs of the notebooks before it are copied in from there (`start_from`)."""
    if cfg.from_run:
        start_from(cfg, notebook)
    path = layout(cfg).folder(notebook)
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunError(ValueError):
    """A run folder or a run archive that cannot serve: one line that says what to run or to pass instead."""


# What a run folder keeps that nobody needs from it later: trainer checkpoints, the LR sweep's and the learning
# curve's models, tokenized splits. Left out when a run is packed or started from.
CACHES = ("trainer", "trainer_*", "sweep_*", "curve_*", "rival_*", "prepared", "__pycache__", "*.tmp")


def is_cache(name: str) -> bool:
    """Whether a file or folder name (one part of a path) is one of the run's `CACHES`."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in CACHES)


def finished_run(folder: Path, asked: str) -> Path:
    """`folder` if some notebook finished in it (its metrics.json), else the one line that says what to pass;
    `asked` names the option it came from."""
    if not any(Path(folder).glob("*/metrics.json")):
        raise RunError(f"{asked}={folder}: not a finished run folder (no notebook's metrics.json in it). Pass "
                       f"runs/<timestamp>-<profile> after `make course`, or a folder that `python -m helpers unpack` "
                       f"made.")
    return Path(folder)


def start_from(cfg: CourseConfig, notebook: str) -> list[str]:
    """Copy into `cfg.run_dir` the folders of the notebooks before `notebook` (for `solution(chapter)`: up to and with
    `chapter`) that `cfg.from_run` holds and this run lacks, without their caches; `cfg.from_run` is only read.
    Returns the notebooks copied."""
    source = Path(cfg.from_run)
    if not source.is_absolute() and not source.exists():  # a notebook's working folder is notebooks/
        source = ROOT / source
    finished_run(source, "from_run")
    if source.resolve() == Path(cfg.run_dir).resolve():
        raise RunError(f"from_run={cfg.from_run} is the run folder itself: give this run its own run_dir.")
    copied, chapter = [], notebook.removeprefix(SOLUTIONS + "/")  # a solution reads its own chapter's outputs too
    for stem in (nb.stem for nb in course_notebooks()):
        if stem == notebook:
            break
        if (source / stem).is_dir() and not (Path(cfg.run_dir) / stem).exists():
            shutil.copytree(source / stem, Path(cfg.run_dir) / stem,
                            ignore=lambda _, names: [name for name in names if is_cache(name)])
            copied.append(stem)
        if stem == chapter:
            break
    return copied


def pack_run(run: Path, archive: Path | None = None) -> Path:
    """One .tar of a finished run folder without its caches (`CACHES`): what a teacher hands out so that a learner
    can start at any notebook (`unpack_run`, then `from_run`). Default: <run folder>.tar beside it."""
    run = finished_run(run, "pack")
    archive = Path(archive) if archive else run.parent / f"{run.name}.tar"
    part = archive.with_name(archive.name + ".part")
    with tarfile.open(part, "w") as tar:  # model weights barely compress: plain tar, fast to pack and unpack
        tar.add(run, arcname=run.name,
                filter=lambda info: None if any(map(is_cache, Path(info.name).parts)) else info)
    part.replace(archive)  # never a half-written archive under the final name
    return archive


def unpack_run(archive: Path, root: Path = ROOT / "runs") -> Path:
    """A packed run (`pack_run`) unpacked under `root` as its own folder; returns that folder (for FROM=)."""
    archive = Path(archive)
    if not archive.is_file() or not tarfile.is_tarfile(archive):
        raise RunError(f"{archive}: not a run archive. Pass the .tar that `python -m helpers pack` wrote.")
    with tarfile.open(archive) as tar:
        tops = {Path(name).parts[0] for name in tar.getnames()}
        if len(tops) != 1:
            raise RunError(f"{archive}: holds {len(tops)} folders, not one run folder. Pack it with "
                           f"`python -m helpers pack RUN`.")
        target = Path(root) / tops.pop()
        if target.exists():
            raise RunError(f"{target} exists already: remove it, or unpack into another folder (--into).")
        tar.extractall(root, filter="data")  # no absolute paths, no links out of `root`
    return target


def missing_input(cfg: CourseConfig, what: str, made_by: str) -> str:
    """The one line for an input that notebook `made_by` makes and this run folder lacks: what to run, or to pass."""
    return (f"{what} is not in {cfg.run_dir}: run notebook {made_by[:2]} ({made_by}) first with the same run_dir, or "
            f"start from a finished run: make lab FROM=runs/<timestamp>-{cfg.profile} (or overrides={{\"from_run\": "
            f"...}}).")


def chapter_metrics(cfg: CourseConfig, notebook: str) -> dict:
    """What `notebook` recorded in this run folder, or the one line that says what to run first (`RunError`)."""
    found = layout(cfg).metrics(notebook)
    if found is None:
        raise RunError(missing_input(cfg, RELATIVE.metrics_file(notebook).as_posix(), notebook))
    return found


def json_safe(value):
    """`value` as JSON can hold it: dicts and sequences walked, paths and sets (sorted) made plain, numpy and torch
    scalars unwrapped, non-finite floats None, and anything else JSON lacks (a class, a function: setfit's loss and
    distance) by its qualified name or its string."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(json_safe(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy and torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return getattr(value, "__qualname__", None) or str(value)


def config_record(config) -> dict:
    """A library's config object (SFTConfig, LoraConfig, transformers' or setfit's TrainingArguments) as the notebooks
    record it in their metrics and the tests compare it with the helpers' builders: its `to_dict()`, `json_safe`."""
    return json_safe(config.to_dict())


def merge_json(path: Path, values: dict, first: dict | None = None) -> Path:
    """Merge `values` into the JSON object at `path` (starting from `first` if the file is new), atomically."""
    data = json.loads(path.read_text()) if path.exists() else dict(first or {})
    data.update(json_safe(values))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def cpu_capability() -> str | None:
    """The CPU kernels PyTorch runs here ("AVX512", "AVX2", ...; `ATEN_CPU_CAPABILITY` lowers it), where torch is
    loaded (None where it is not: a metrics file is not worth loading it)."""
    torch = sys.modules.get("torch")
    return torch.backends.cpu.get_cpu_capability() if torch is not None else None


def record_metrics(cfg: CourseConfig, notebook: str, **values) -> Path:
    """Merge `values` into `<run_dir>/<notebook>/metrics.json` with the config and package versions that made them.
    A file written under another config (the same step run again with other settings) is started over, so that no
    result ever sits beside settings that did not produce it."""
    stamp = {"notebook": notebook, "config": json_safe(cfg.to_dict()), "versions": package_versions(),
             "cpu_capability": cpu_capability()}
    notebook_dir(cfg, notebook)
    path = layout(cfg).metrics_file(notebook)
    if path.exists() and json.loads(path.read_text()).get("config") != stamp["config"]:
        path.unlink()
    return merge_json(path, {**stamp, **values})


def _timed_runs(profile: str, current: Path | None, root: Path):
    """(run, metrics) of every finished course run, newest first, of `profile` ("*": any), with every notebook timed
    and notebook 00's token counts recorded; `current` left out."""
    for run in course_runs(profile, root):
        metrics = load_metrics(run)
        known = metrics.get(DATA, {}).get("split_tokens")
        if run.resolve() == current or not known or len(metrics) < len(course_notebooks()) or \
                None in [m.get("wall_seconds") for m in metrics.values()]:
            continue
        yield run, metrics


def _ran_live(metrics: dict) -> bool:
    """Whether a run's notebook 06 trained (it shows recorded figures otherwise: `distill.recorded_distillation`)."""
    return "recorded" not in metrics.get(DISTILLATION, {})


def course_estimate(profile: str, tokens: dict, current: Path | None = None, root: Path = ROOT / "runs",
                    distillation_live: bool | None = None) -> dict:
    """How long the course will take on data of `tokens` ({split: tokens}, `helpers.data.split_tokens`): the newest
    finished course run of `profile` on this machine (every notebook timed, its data's tokens recorded by notebook
    00), its wall time scaled by the ratio of tokens. `distillation_live` says whether this run's notebook 06 will
    train or show recorded figures: where the reference did the other, 06 is timed from the newest finished run of any
    profile whose 06 did the same, and left out, with a word, where none did. Returns {"minutes" (None without a
    reference), "reference", "sentence"}."""
    total, current = sum(tokens.values()), Path(current).resolve() if current else None
    for run, metrics in _timed_runs(profile, current, root):
        ratio = total / max(sum(metrics[DATA]["split_tokens"].values()), 1)
        seconds = sum(m["wall_seconds"] for m in metrics.values())
        minutes, said = seconds / 60 * ratio, ""
        if distillation_live is not None and DISTILLATION in metrics and _ran_live(metrics) != distillation_live:
            minutes -= metrics[DISTILLATION]["wall_seconds"] / 60 * ratio
            how = "trains live" if distillation_live else "shows recorded figures"
            other = next(((r, m) for r, m in _timed_runs("*", current, root) if _ran_live(m) == distillation_live),
                         None)
            if other is None:
                said = (f" Notebook 06 {how} here, which no finished run on this machine did: the estimate leaves its "
                        f"time out.")
            else:
                again = total / max(sum(other[1][DATA]["split_tokens"].values()), 1)
                minutes += other[1][DISTILLATION]["wall_seconds"] / 60 * again
                said = f" Notebook 06 {how} here, so its time is scaled from {other[0].name}, where it did too."
        return {"minutes": minutes, "reference": str(run), "sentence": (
            f"Expect about {minutes:.0f} min for the whole course on this data ({total:,} tokens to train, evaluate and "
            f"test on), scaled from the finished run {run.name} on this machine: {seconds / 60:.1f} min for "
            f"{sum(metrics[DATA]['split_tokens'].values()):,} tokens.{said}")}
    return {"minutes": None, "reference": None, "sentence": (
        f"No finished course run of profile {profile!r} on this machine with its tokens counted (notebook 00 counts "
        f"them) to time this one against ({total:,} tokens to train, evaluate and test on): this run will be the "
        f"reference for the next estimate.")}


def load_metrics(run_dir: Path) -> dict:
    """{notebook: metrics} for every metrics.json in a run folder."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(run_dir).glob("*/metrics.json"))}


# Where and on how many threads a run ran: this machine's, not what the run made.
NOT_CARRIED = ("run_dir", "from_run", "cache_dir", "threads")


def recorded_config(run_dir: Path) -> dict | None:
    """The knobs a run was made with, as the first of its notebooks' metrics.json recorded them (less `NOT_CARRIED`,
    and less any knob this version of the course no longer has), or None when no notebook of it recorded any."""
    names = {f.name for f in dataclasses.fields(CourseConfig)} - set(NOT_CARRIED)
    for notebook in course_notebooks():
        metrics = RunLayout(Path(run_dir)).metrics(folder_name(notebook))
        if metrics and "config" in metrics:
            return {k: v for k, v in metrics["config"].items() if k in names}
    return None


def course_notebooks() -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def solution_notebooks() -> list[Path]:
    """The worked solutions, one notebook per chapter, named as the chapter whose exercises they answer."""
    return sorted((NOTEBOOKS / SOLUTIONS).glob("[0-9][0-9]_*.ipynb"))


def folder_name(notebook: Path) -> str:
    """The folder a notebook file keeps inside a run folder: its stem, or `solution(stem)` for a worked solution."""
    return solution(notebook.stem) if Path(notebook).parent.name == SOLUTIONS else Path(notebook).stem


def execute_notebook(notebook: Path, output: Path, parameters: dict, progress: bool = False) -> float:
    """Run one notebook headless with papermill (in the notebooks folder); returns the wall time in seconds."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=KERNEL,
                               cwd=str(notebook.parent), progress_bar=progress)
    return time.perf_counter() - start


def run_course(profile: str, notebooks: list[Path] | None = None, root: Path = ROOT / "runs",
               overrides: dict | None = None, run_dir: Path | None = None) -> tuple[Path, bool]:
    """Every notebook in order into a new run folder (or `run_dir`), each with the profile and the same `overrides`
    (CourseConfig knobs); stops at the first failure and says where to look. Returns (run folder, whether every
    notebook finished)."""
    # absolute: each notebook runs in its own folder (notebooks/, notebooks/solutions/), not where this was called
    run_dir = Path(run_dir).resolve() if run_dir else new_run_dir(profile, root)
    overrides = {**(overrides or {}), **({"from_run": str(Path(overrides["from_run"]).resolve())}
                                         if (overrides or {}).get("from_run") else {})}
    parameters = {"profile": profile, "run_dir": str(run_dir), "overrides": json_safe(overrides)}
    notebooks = notebooks or course_notebooks()
    print(f"Run folder: {run_dir}")
    start, estimate = time.perf_counter(), None
    for i, nb in enumerate(notebooks, 1):
        out = run_dir / folder_name(nb) / nb.name
        print(f"[{i}/{len(notebooks)}] {folder_name(nb)} ...", flush=True)
        try:
            seconds = execute_notebook(nb, out, parameters, progress=True)
        except Exception as err:
            where = f"cell [{err.exec_count}], " if getattr(err, "exec_count", None) else ""
            print(f"FAILED: {nb.name}: {where}{getattr(err, 'ename', type(err).__name__)}: "
                  f"{getattr(err, 'evalue', err)}\nThe executed notebook with the error is {out}; results so far "
                  f"stay in {run_dir}.")
            return run_dir, False
        print(f"[{i}/{len(notebooks)}] {folder_name(nb)} done in {seconds:.0f} s", flush=True)
        metrics = merge_json(run_dir / folder_name(nb) / "metrics.json", {"wall_seconds": round(seconds, 1)})
        if nb.stem == DATA:  # notebook 00 timed this data against an earlier run on this machine: say it first
            estimate = json.loads(metrics.read_text()).get("estimate")
            print(estimate["sentence"] if estimate else "", flush=True)
    spent = (time.perf_counter() - start) / 60
    expected = f" (estimated {estimate['minutes']:.0f} min)" if estimate and estimate.get("minutes") else ""
    print(f"Done in {spent:.1f} min{expected}. Results: {run_dir}")
    return run_dir, True
