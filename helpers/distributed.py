"""`classify --engine ray`: label a file on Ray Data, on this machine or on a cluster, into the same files as
`classify` writes, each input row exactly once and in input order, resumable after a crash.

The pipeline is Ray's own, with none of our scheduling: a read task parses the file with `classify`'s own reader
(the same row numbers, the same bad rows) into batches of `batch_size` reviews, the batches `classify` would take;
`map_batches` runs one copy of the model per actor (`ActorPoolStrategy`, restarted by Ray when one dies, its tasks
retried), and `write_parquet` writes each labelled block to `<output>.ray/parts/`. Ray Data's checkpointing
(`DataContext.checkpoint_config`, keyed by each batch's first row number) records every written block in
`<output>.ray/checkpoint/`, so a rerun after a killed driver skips what was written.
At the end the driver streams the input once more in row order, takes each row's probabilities (or the model's
error) from the parts, and writes the output and errors files under temporary names in `<output>.ray/`, then
renames them into place: a reader never sees half a file. Only then is `<output>.ray/` removed.

Without `address`, a local Ray starts on this machine with a capped object store; with `address` ("auto", or
"ray://host:10001") it joins a running cluster, whose nodes must all see the input and output paths (a shared
file system) and have this package installed (`pip install -e '.[distributed]'`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

import helpers

from helpers.classify import (ERROR_COLUMNS, ClassifyError, Job, _Writer, load_classifier, model_failure,
                              output_record, plan_job, read_rows, rows_done, summary, _probabilities_or_errors)
from helpers.config import CourseConfig

INSTALL = ("--engine ray needs Ray Data, an optional extra: pip install -e '.[distributed]' "
           "(or make setup EXTRAS=distributed).")
OBJECT_STORE_BYTES = 512 * 2**20  # the local Ray's shared-memory store: blocks of reviews are small
BLOCK_ROWS = 256  # rows per block the read task yields: each block is labelled, written and checkpointed as one
# Logical CPUs the local Ray adds beside one per worker: the read and write tasks and the checkpoint filter each hold
# one, and workers that take every CPU starve them (ray#44687). Threads are set per worker, not by this count.
SPARE_CPUS = 3


def import_ray():
    """Ray and Ray Data, or one ClassifyError that says how to install the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ClassifyError(INSTALL) from None
    return ray


def start_ray(address: str | None, workers: int | None) -> tuple[int, float]:
    """Join the cluster at `address`, or start a local Ray here. Returns (workers, seconds it took): the default is
    one worker per CPU of the cluster (here: per core)."""
    ray = import_ray()
    start = time.perf_counter()
    if ray.is_initialized():
        ray.shutdown()
    if address:
        ray.init(address=address, runtime_env={"py_modules": [os.path.dirname(helpers.__file__)]},
                 log_to_driver=False)
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    else:
        workers = workers or os.cpu_count() or 1
        ray.init(num_cpus=workers + SPARE_CPUS, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    return workers, time.perf_counter() - start


class Labeler:
    """One copy of the model on a Ray actor. Each input row is one batch of reviews exactly as `classify` takes them
    (`batch_size` labellable rows in a row): `rows` and `texts` in, `rows`, `errors` and `p` (one list of
    probabilities per review) out. A float sum depends on which reviews share a forward pass, so the same batches give
    the same bytes. A review the model fails on alone gets its error and NaN probabilities, as `classify` reports it."""

    def __init__(self, cfg: CourseConfig, model: str, threads: int):
        self.cfg = dataclasses.replace(cfg, threads=threads)
        self.probabilities = load_classifier(self.cfg, model)

    def __call__(self, batch):
        import pandas as pd

        errors, p = [], []
        for texts in batch["texts"]:
            out = _probabilities_or_errors(self.probabilities, list(texts))
            errors.append([model_failure(x) if isinstance(x, Exception) else "" for x in out])
            p.append([[np.nan] * len(self.cfg.labels) if isinstance(x, Exception) else np.asarray(x, float).tolist()
                      for x in out])
        return pd.DataFrame({"batch": batch["batch"], "rows": batch["rows"], "errors": errors, "p": p})


def reviews_source(cfg: CourseConfig, job: Job, batch_size: int):
    """A Ray Data datasource of the input's labellable rows, read by one task with `classify`'s own reader, as
    batches of `batch_size` (one Ray row each: `batch` is its first row number, the id Ray's checkpoint keys on;
    `rows` the row numbers, each row's stable id; `texts`), BLOCK_ROWS reviews to a block. Rows with a reason (empty
    text, a bad record) are left out here and reported by the merge, which reads the file again."""
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def block(batches):
        return pa.table({"batch": pa.array([rows[0] for rows, _ in batches], pa.int64()),
                         "rows": pa.array([rows for rows, _ in batches], pa.list_(pa.int64())),
                         "texts": pa.array([texts for _, texts in batches], pa.list_(pa.string()))})

    def read():
        batches, rows, texts = [], [], []
        for row, _, text, reason in read_rows(cfg, job):
            if reason is None:
                rows.append(row)
                texts.append(text)
            if len(rows) == batch_size:
                batches.append((rows, texts))
                rows, texts = [], []
                if len(batches) * batch_size >= BLOCK_ROWS:
                    yield block(batches)
                    batches = []
        if rows:
            batches.append((rows, texts))
        if batches:
            yield block(batches)

    class Reviews(Datasource):
        def estimate_inmemory_data_size(self):
            return job.input.stat().st_size

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            meta = BlockMetadata(num_rows=None, size_bytes=job.input.stat().st_size, input_files=[str(job.input)],
                                 exec_stats=None)
            return [ReadTask(read, meta, per_task_row_limit=per_task_row_limit)]

    return Reviews()


def classify_on_ray(cfg: CourseConfig, input_path: str | Path, output_path: str | Path | None = None,
                    model_path: str | Path | None = None, text_column: str | None = None, batch_size: int = 32,
                    progress: bool = True, address: str | None = None, workers: int | None = None) -> dict:
    """`classify.classify_file` on Ray Data (see the module docstring): the same files, from `workers` copies of
    the model (default: one per CPU) on a local Ray, or on the cluster at `address`. Returns `classify_file`'s
    summary, plus engine, workers and ray_start_seconds; rows_skipped counts the rows a killed run had written."""
    start = time.perf_counter()
    if workers is not None and workers < 1:
        raise ClassifyError(f"--workers must be at least 1, not {workers}.")
    job = plan_job(cfg, input_path, output_path, model_path, text_column, batch_size)
    ray = import_ray()
    finished = _finished_output(cfg, job)
    if finished is not None:
        return summary(job, 0, finished, 0, time.perf_counter() - start, 0.0, {}, engine="ray", workers=0,
                       ray_start_seconds=0.0)
    job.provenance_path.write_text(json.dumps(job.provenance, indent=2))
    parts, checkpoint = job.work / "parts", job.work / "checkpoint"
    earlier = _read_parts(parts, len(cfg.labels))  # what a killed run wrote, kept by Ray
    before = np.unique(earlier["row"]).size
    labelled_before = np.unique(earlier["row"][earlier["error"] == ""]).size
    workers, ray_seconds = start_ray(address, workers)
    try:
        from ray.data import ActorPoolStrategy, DataContext
        from ray.data.checkpoint import CheckpointConfig

        context = DataContext.get_current()  # no preserve_order: the merge puts the rows in order by their ids
        context.enable_progress_bars = progress
        context.checkpoint_config = CheckpointConfig(id_column="batch", checkpoint_path=str(checkpoint.resolve()),
                                                     delete_checkpoint_on_success=False)
        threads = 1 if address else max(1, cfg.threads // workers)  # this machine's cores, shared out
        label_start = time.perf_counter()
        (ray.data.read_datasource(reviews_source(cfg, job, batch_size))
         .map_batches(Labeler, fn_constructor_kwargs={"cfg": cfg, "model": str(job.model), "threads": threads},
                      batch_size=None, batch_format="pandas", compute=ActorPoolStrategy(size=workers),
                      num_cpus=1)
         .write_parquet(str(parts.resolve())))
        seconds = time.perf_counter() - label_start
    finally:
        ray.shutdown()
    tally, counts = _merge(cfg, job, parts)
    shutil.rmtree(job.work)
    return summary(job, tally["labelled"] - labelled_before, before, tally["bad"], label_start - start, seconds,
                   counts, engine="ray", workers=workers, ray_start_seconds=ray_seconds)


def _finished_output(cfg: CourseConfig, job: Job) -> int | None:
    """The rows of a run with nothing left to label (every row is in the output or the errors file), None when
    there is no output yet or a Ray run is under way. An output that a single-process run left half-done is
    refused: finish it the way it was started."""
    if not (job.output.exists() or job.errors.exists()):
        return None
    done = rows_done(cfg, job)
    rows = [row for row, *_ in read_rows(cfg, job)]
    if set(rows) <= done:
        if job.work.exists():
            shutil.rmtree(job.work)  # a run killed after its renames
        return len(rows)
    if job.work.exists():
        return None  # a Ray run killed between its two renames: the merge writes both files again
    raise ClassifyError(f"{job.output} holds {len(done)} of {len(rows)} rows, written by `classify` without --engine "
                        f"ray: run that command again to finish it, or delete {job.output} and {job.errors} to "
                        f"label the file on Ray.")


def _read_parts(parts: Path, labels: int) -> dict[str, np.ndarray]:
    """The part files' reviews, one entry per review: row, error ("" when labelled) and p (reviews x labels); a part
    that cannot be read (cut off by a crash) is left out."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = []
    for path in sorted(parts.glob("*.parquet")) if parts.is_dir() else []:
        try:
            tables.append(pq.read_table(path, columns=["rows", "errors", "p"]))
        except (pa.ArrowInvalid, OSError):
            continue
    if not tables:
        return {"row": np.zeros(0, np.int64), "error": np.zeros(0, object), "p": np.zeros((0, labels))}
    table = pa.concat_tables(tables)
    return {"row": pc.list_flatten(table["rows"]).to_numpy(),
            "error": pc.list_flatten(table["errors"]).to_numpy(zero_copy_only=False),
            "p": pc.list_flatten(pc.list_flatten(table["p"])).to_numpy().reshape(-1, labels)}


def _merge(cfg: CourseConfig, job: Job, parts: Path):
    """Write the output and errors files from the parts, in input order, each row once: streamed into temporary
    files in the work folder, then renamed into place. A row the parts lack (never expected) stops it with what to
    do, the parts kept."""
    found = _read_parts(parts, len(cfg.labels))
    rows, first = np.unique(found["row"], return_index=True)
    index = dict(zip(rows.tolist(), first.tolist()))
    p = found["p"]
    tally, counts, missing = Counter(), Counter(), []
    temporary = {"output": job.work / f"output{job.output.suffix}.partial", "errors": job.work / "errors.csv.partial"}
    with _Writer(temporary["output"], job.kind, job.columns, cfg.encoding) as out, \
            _Writer(temporary["errors"], "csv", ERROR_COLUMNS, cfg.encoding) as errors:
        for row, record, _, reason in read_rows(cfg, job):
            at = index.get(row)
            if reason or (at is not None and found["error"][at]):
                errors.write({"row": row, "reason": reason or found["error"][at]})
                tally["bad"] += 1
            elif at is None:
                missing.append(row)
            else:
                labelled = output_record(cfg, row, record, p[at])
                out.write(labelled)
                counts[labelled["predicted_label"]] += 1
                tally["labelled"] += 1
    if missing:
        raise ClassifyError(f"Ray finished without {len(missing)} rows (first: {missing[:5]}); nothing was lost: run "
                            f"the same command again to label them.")
    job.output.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temporary["errors"], job.errors)
    os.replace(temporary["output"], job.output)
    return tally, counts
