"""Label your own CSV or JSONL file with a trained model: every row comes back with a label and its probabilities.

`classify_file` streams: it reads, labels and writes `batch_size` rows at a time and flushes after each batch, so a
million reviews take no more memory than a hundred. Each output row is the input row unchanged plus `row` (its
1-based data row number; blank lines are not rows), `predicted_label` and one `p_<label>` column per label.
Rows that cannot be labelled (empty text, text not in the configured encoding, a JSONL line that is not JSON or
lacks the text field) go to `<output>.errors.csv` with their row number and the reason; the rest keep going.
An interrupted run resumes: rows already in the output or the errors file are skipped, never labelled twice — but
only when `<output>.provenance.json` says the output was written for the same input (content hash), model (content
hash), labels and text column; any other existing output is refused and left untouched. Nothing is opened for
writing before the input, the model and the output's provenance have been checked.
The model is anything `helpers.predict.load_predictor` loads (a GGUF file, a Hugging Face folder, a LoRA adapter,
a fine-tuned encoder or SetFit folder); by default the Q4_K_M file of the newest `make course` run.
"""
from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from helpers.config import ROOT, CourseConfig
from helpers.model import MODEL_PATHS, ModelError, fingerprint
from helpers.predict import load_predictor
from helpers.runs import RELATIVE, latest_run

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
DEFAULT_GGUF = RELATIVE.gguf("Q4_K_M")  # inside a course run folder
SURROGATE = re.compile("[\ud800-\udfff]")  # what errors="surrogateescape" turns undecodable bytes into
ERROR_COLUMNS = ["row", "reason"]
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long review is one field: never a record split into "rows"


class ClassifyError(ValueError):
    """A file or model that cannot be labelled or used, with what to do about it."""


def find_model(cfg: CourseConfig, runs_root: Path = ROOT / "runs") -> Path:
    """The Q4_K_M GGUF file of the newest finished course run (`runs/<timestamp>-<profile>/`, newest by name).

    Folders not named by a timestamp (`runs/bench`, JupyterLab's `runs/lab-<profile>`) are not course runs."""
    run = latest_run(DEFAULT_GGUF, root=runs_root)
    if run is None:
        raise ClassifyError(f"No trained model found: no {runs_root}/<timestamp>-<profile>/{DEFAULT_GGUF}. "
                            f"Run `make course` first, or pass a model path (a .gguf file, a Hugging Face model "
                            f"folder or a LoRA adapter folder).")
    return run / DEFAULT_GGUF


def load_classifier(cfg: CourseConfig, model_path: str | Path):
    """`probabilities(texts) -> (n, labels) array` of any trained model (see `helpers.predict.load_predictor`):
    a GGUF file, a Hugging Face folder, a LoRA adapter folder, a fine-tuned encoder or a SetFit folder."""
    try:
        return load_predictor(cfg, model_path).probabilities
    except ModelError as err:
        raise ClassifyError(str(err)) from None


@dataclass
class Job:
    """One file to label, checked: where it is read from and written to, and what the output was written for."""
    input: Path
    kind: str  # "csv" or "jsonl"
    output: Path
    errors: Path  # <output>.errors.csv
    work: Path  # <output>.ray/: what `--engine ray` keeps until its output is whole
    provenance_path: Path  # <output>.provenance.json
    provenance: dict
    text_column: str
    columns: list[str]  # the output's: the input's header (CSV) + row, predicted_label, p_<label>...
    model: Path


def plan_job(cfg: CourseConfig, input_path: str | Path, output_path: str | Path | None = None,
             model_path: str | Path | None = None, text_column: str | None = None, batch_size: int = 32) -> Job:
    """Every check a labelling run makes before it opens anything for writing: the input's type, rows and text
    column, the output's path and suffix, the model, and that an existing output was written for this input and
    model (see the module docstring). Raises ClassifyError with what to do."""
    if batch_size < 1:
        raise ClassifyError(f"batch_size must be at least 1, not {batch_size}.")
    input_path = Path(input_path)
    kind = _file_kind(input_path)
    output_path = Path(output_path or input_path.with_name(f"{input_path.stem}.labelled{input_path.suffix}"))
    text_column = text_column or cfg.text_column
    if output_path.resolve() == input_path.resolve():
        raise ClassifyError(f"{output_path}: the output would overwrite the input; choose another output path.")
    if FORMATS.get(output_path.suffix.lower()) != kind:
        raise ClassifyError(f"{output_path}: the output is written in the input's format; give it the suffix "
                            f"{input_path.suffix}.")
    added = ["row", "predicted_label"] + [f"p_{label}" for label in cfg.labels]
    header = _check_input(input_path, kind, text_column, added, cfg.encoding)
    model_path = Path(model_path) if model_path else find_model(cfg)
    if not model_path.exists():
        raise ClassifyError(f"{model_path}: no such file or folder. {MODEL_PATHS}")
    beside = {what: output_path.with_name(output_path.name + suffix)
              for what, suffix in (("errors", ".errors.csv"), ("work", ".ray"), ("provenance", ".provenance.json"))}
    provenance = {"input": str(input_path.resolve()), "input_sha256": fingerprint(input_path),
                  "model": str(model_path.resolve()), "model_sha256": fingerprint(model_path),
                  "labels": list(cfg.labels), "text_column": text_column}
    _check_provenance(provenance, beside["provenance"], output_path, beside["errors"], beside["work"])  # reads only
    return Job(input_path, kind, output_path, beside["errors"], beside["work"], beside["provenance"], provenance,
               text_column, header + added, model_path)


def classify_file(cfg: CourseConfig, input_path: str | Path, output_path: str | Path | None = None,
                  model_path: str | Path | None = None, text_column: str | None = None, batch_size: int = 32,
                  progress: bool = True) -> dict:
    """Label every row of a CSV or JSONL file into `output_path` (default `<stem>.labelled.<suffix>` beside it), in
    the input's format, `batch_size` rows at a time; an existing output is resumed (see the module docstring).
    `helpers.distributed.classify_on_ray` writes the same files from Ray Data.

    Returns a summary: input, output, errors, model, rows_labelled (this run), rows_skipped (done before),
    bad_rows (reported by this run), load_seconds, seconds, reviews_per_second and label_counts (this run)."""
    start = time.perf_counter()
    job = plan_job(cfg, input_path, output_path, model_path, text_column, batch_size)
    probabilities = load_classifier(cfg, job.model)

    # Resume: the rows an interrupted run already wrote or reported (a half-written last record is cut off first).
    done = rows_done(cfg, job)
    job.provenance_path.write_text(json.dumps(job.provenance, indent=2))
    label_start = time.perf_counter()
    job.output.parent.mkdir(parents=True, exist_ok=True)
    tally, counts, batch = Counter(), Counter(), []
    total = max(_count_lines(job.input) - (job.kind == "csv") - len(done), 0)  # roughly: blank lines count too
    with _Writer(job.output, job.kind, job.columns, cfg.encoding) as out, \
            _Writer(job.errors, "csv", ERROR_COLUMNS, cfg.encoding) as errors, \
            tqdm(total=total, desc="labelling", unit="review", disable=not progress) as bar:

        def report(row, reason):
            errors.write({"row": row, "reason": reason})
            tally["bad"] += 1
            bar.update(1)

        def label_batch():
            for (row, record, _), p in zip(batch, _probabilities_or_errors(probabilities, [t for _, _, t in batch])):
                if isinstance(p, Exception):
                    report(row, model_failure(p))
                    continue
                labelled = output_record(cfg, row, record, p)
                out.write(labelled)
                counts[labelled["predicted_label"]] += 1
                tally["labelled"] += 1
                bar.update(1)
            out.flush()
            errors.flush()
            batch.clear()

        for row, record, text, reason in read_rows(cfg, job):
            if row in done:
                tally["skipped"] += 1
            elif reason:
                report(row, reason)
            else:
                batch.append((row, record, text))
                if len(batch) == batch_size:
                    label_batch()
        if batch:
            label_batch()
    return summary(job, tally["labelled"], tally["skipped"], tally["bad"], label_start - start,
                   time.perf_counter() - label_start, counts)


def summary(job: Job, labelled: int, skipped: int, bad: int, load_seconds: float, seconds: float, counts,
            **more) -> dict:
    """What a labelling run returns (both engines): its files, this run's rows labelled, skipped (done before) and
    bad, its seconds and reviews/s, and its label counts."""
    return {"input": job.input, "output": job.output, "errors": job.errors, "model": job.model,
            "rows_labelled": labelled, "rows_skipped": skipped, "bad_rows": bad, "load_seconds": load_seconds,
            "seconds": seconds, "reviews_per_second": labelled / max(seconds, 1e-9), "label_counts": dict(counts),
            **more}


def read_rows(cfg: CourseConfig, job: Job):
    """(row number, record, text, reason) for every data row of the job's input, in order; `reason` says why a row
    cannot be labelled (then text is None). The row number is each row's stable id for both engines."""
    return _read_rows(job.input, job.kind, job.text_column, cfg.encoding)


def rows_done(cfg: CourseConfig, job: Job) -> set[int]:
    """The rows an earlier run already wrote to the job's output or errors file (a half-written last record is cut
    off first)."""
    return _rows_done(job.output, job.kind, job.columns, cfg.encoding) | \
        _rows_done(job.errors, "csv", ERROR_COLUMNS, cfg.encoding)


def output_record(cfg: CourseConfig, row: int, record: dict, p) -> dict:
    """An output row: the input record unchanged, its row number, the label and each label's probability (4 places)."""
    return {**record, "row": row, "predicted_label": cfg.labels[int(np.argmax(p))],
            **{f"p_{label}": round(float(x), 4) for label, x in zip(cfg.labels, p)}}


def model_failure(err: Exception) -> str:
    """The errors file's reason for a review the model fails on alone."""
    return f"the model failed on this review alone ({err})"


def _check_provenance(provenance: dict, record: Path, output: Path, errors: Path, work: Path) -> None:
    """Refuse (touching nothing) an existing output, errors file or Ray work folder that was not written for this
    input and model."""
    existing = [p for p in (output, errors, work) if p.exists()]
    if not existing:
        return
    earlier = json.loads(record.read_text()) if record.exists() else None
    if earlier is None:
        why = "there is no record of what wrote it"
    else:
        why = "; ".join(what for key, what in (
            ("input_sha256", f"the input's content differs from {earlier.get('input')}'s then"),
            ("model_sha256", f"it was labelled by another model ({earlier.get('model')})"),
            ("labels", f"its labels were {earlier.get('labels')}"),
            ("text_column", f"its text column was {earlier.get('text_column')!r}")) if earlier.get(key) != provenance[key])
        if not why:
            return
    raise ClassifyError(f"{existing[0]} exists but was not written for this input and model ({why}). Nothing was "
                        f"changed. To start over, delete {' and '.join(str(p) for p in existing)}; or choose another "
                        f"output path (--output).")


def _probabilities_or_errors(probabilities, texts) -> list:
    """Each text's probabilities, or the error that text raises on its own. When a batch fails, a short probe tells
    a model that no longer works (the run stops) from one review it cannot take (that row is reported and the run
    goes on). Long reviews are not such a case: `predict.prompt_text` cuts them to the training length."""
    try:
        return list(probabilities(texts))
    except Exception:
        probabilities(["ok"])  # raises when the model itself is broken
        out = []
        for text in texts:
            try:
                out.append(probabilities([text])[0])
            except Exception as err:
                out.append(err)
        return out


def _file_kind(path: Path) -> str:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ClassifyError(f"{path}: unknown file type {path.suffix or '(no suffix)'!r}. Use a .csv file (with a "
                            f"header row) or a .jsonl/.ndjson file (one JSON object per line).")
    return kind


def _check_input(path: Path, kind: str, text_column: str, added: list[str], encoding: str) -> list[str]:
    """The CSV header ([] for JSONL), once the file is known to have rows and the text column. The first JSON object
    stands in for a header, so that a wrong field name fails once here rather than on every row."""
    if not path.is_file():
        raise ClassifyError(f"{path}: no such file.")
    with _open_input(path, encoding, kind) as f:
        first = next((line for line in f if line.strip()), None)
    if first is None:
        raise ClassifyError(f"{path}: the file is empty. It needs " + (
            "a header row and one row per review." if kind == "csv" else "one JSON object per line."))
    columns = next(csv.reader([first])) if kind == "csv" else _json_record(first)[0]
    if columns is None:
        return []  # the first line is not a JSON object: reported as a bad row
    what, where = ("column", "") if kind == "csv" else ("field", " in the first record")
    clash = [c for c in added if c in columns]
    if text_column in columns and not clash:
        return list(columns) if kind == "csv" else []
    problem = f"no {what} {text_column!r}" if text_column not in columns else \
        f"it already has the output {what}(s) {', '.join(clash)}"
    raise ClassifyError(f"{path}: {problem}. {what.title()}s found{where}: {', '.join(columns)}. "
                        f"Name the text {what} with --text-column (text_column=).")


def _open_input(path: Path, encoding: str, kind: str):
    """The input as text; bytes not valid in `encoding` become surrogates (reported per row), a UTF-8 BOM is dropped.
    CSV lines are split by the csv module (a quoted field may hold line breaks); JSONL lines on "\n" only, so a
    carriage return or a U+2028 inside a record never splits it."""
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    return open(path, encoding="utf-8-sig" if utf8 else encoding, errors="surrogateescape",
                newline="" if kind == "csv" else "\n")


def _read_rows(path: Path, kind: str, text_column: str, encoding: str):
    """(row number, record, text, reason) for every data row; `reason` says why a row cannot be labelled."""
    with _open_input(path, encoding, kind) as f:
        if kind == "csv":
            reader = csv.reader(f)
            header = next(fields for fields in reader if fields)  # blank lines before it too, as _check_input does
            rows = _csv_records(reader, header)
        else:
            rows = (_json_record(line) for line in f if line.strip())
        for row, (record, reason) in enumerate(rows, 1):
            if reason is None:
                reason, text = _text_problem(record, text_column, encoding)
            yield row, record, None if reason else text, reason


def _csv_records(reader, header):
    """(record dict, reason) per CSV record; blank lines are skipped, a record that csv cannot read is reported."""
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield None, f"unreadable CSV record ({err})"
            continue
        if not fields:
            continue
        if len(fields) > len(header):
            yield None, f"{len(fields)} fields but the header has {len(header)}"
        else:
            yield dict(zip(header, fields + [""] * (len(header) - len(fields)))), None


def _json_record(line: str):
    """(object, None) for a line holding a JSON object, else (None, reason)."""
    try:
        record = json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg})"
    return (record, None) if isinstance(record, dict) else (None, "not a JSON object")


def _text_problem(record: dict, text_column: str, encoding: str):
    """(reason, text): reason is None when the row can be labelled."""
    if text_column not in record:
        return f"no field {text_column!r}", None
    text = record[text_column]
    if text is not None and not isinstance(text, str):
        return f"field {text_column!r} is not a string", None
    if any(isinstance(v, str) and SURROGATE.search(v) for v in record.values()):
        return f"not valid {encoding} text (re-save the file as {encoding})", None
    if not (text or "").strip():
        return "empty text", None
    return None, text.strip()


def _rows_done(path: Path, kind: str, columns: list[str], encoding: str) -> set[int]:
    """Row numbers in a file that an earlier, interrupted run wrote. A last record cut off mid-write (no line end,
    too few fields) is truncated away first; a CSV written with other columns is refused rather than appended to."""
    done, good_end = set(), 0
    if not path.exists():
        return done
    at = {"offset": 0, "ended": True}  # end of the last line read, and whether it had its line break

    def lines(f):
        for raw in f:
            at["offset"], at["ended"] = at["offset"] + len(raw), raw.endswith(b"\n")
            yield raw.decode(encoding, errors="surrogateescape")

    with open(path, "r+b") as f:
        if kind == "csv":
            records = csv.reader(lines(f))
            header = next(records, None)
            if header is not None and at["ended"] and header != columns:
                raise ClassifyError(f"{path} exists but was not written for this input and labels (its columns: "
                                    f"{', '.join(header)}). Delete it or choose another output path.")
            if header == columns and at["ended"]:
                good_end, row_at = at["offset"], columns.index("row")
                for record in records:
                    if not (at["ended"] and len(record) == len(columns) and record[row_at].isdigit()):
                        break
                    done.add(int(record[row_at]))
                    good_end = at["offset"]
        else:
            for line in lines(f):
                record = _json_record(line)[0]
                if not (at["ended"] and record and isinstance(record.get("row"), int)):
                    break
                done.add(record["row"])
                good_end = at["offset"]
        f.truncate(good_end)
    return done


class _Writer:
    """Appends records to a CSV (header written when the file is new) or JSONL file, in the input's encoding."""

    def __init__(self, path: Path, kind: str, columns: list[str], encoding: str):
        self.path, self.kind, self.columns, self.encoding = path, kind, columns, encoding

    def __enter__(self):
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self.file = open(self.path, "a", encoding=self.encoding, errors="surrogateescape", newline="")
        if self.kind == "csv":
            self.csv = csv.DictWriter(self.file, self.columns)
            if fresh:
                self.csv.writeheader()
        return self

    def write(self, record: dict):
        if self.kind == "csv":
            self.csv.writerow(record)
        else:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def flush(self):
        self.file.flush()

    def __exit__(self, *exc):
        self.file.close()


def _count_lines(path: Path) -> int:
    """Lines in a file, read in 1 MB blocks: a quick total for the progress bar."""
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
