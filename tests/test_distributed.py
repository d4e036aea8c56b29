"""`classify --engine ray` on a local Ray (a capped object store, started by each run as a user's run starts it):
the same files as one process, byte for byte; a killed worker and a killed driver lose nothing and repeat nothing."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from helpers import classify, distributed
from helpers.classify import ClassifyError, classify_file, plan_job
from helpers.distributed import classify_on_ray

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg(cfg):
    """One thread for the one process and for each Ray worker alike: these tests share the machine, and the same
    threads leave no room for a float sum to come out otherwise."""
    cfg.threads = 1
    return cfg


@pytest.fixture
def hf_model(cfg):
    from helpers.model import resolve_model

    return Path(resolve_model(cfg))


def reviews_csv(path: Path, n: int, bad: bool = True) -> Path:
    """n rows of reviews with an id column; with `bad`, every 50th text is empty, one record has a field too many and
    one review spans two lines."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["id", "text"])
        for i in range(n):
            if bad and i % 50 == 7:
                out.writerow([i, ""])
            elif bad and i == 11:
                out.writerow([i, "one field", "too many"])
            else:
                what = "café ☕, fine" if i % 3 else "it broke after\na week"
                out.writerow([i, f"Review {i}: {what}, {'great' if i % 2 else 'awful'} value"])
    return path


def same_files(one: dict, other: dict):
    for key in ("output", "errors"):
        assert Path(one[key]).read_bytes() == Path(other[key]).read_bytes(), key


def single_process(cfg, source: Path, model: Path, tmp_path: Path) -> dict:
    return classify_file(cfg, source, tmp_path / f"local{source.suffix}", model, progress=False)


def labeler_processes() -> list[psutil.Process]:
    """This test's Ray actors that hold a copy of the model (their process title names the map)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "MapBatches(Labeler)" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def checkpointed(output: Path) -> int:
    folder = output.with_name(output.name + ".ray") / "checkpoint"
    return len(list(folder.iterdir())) if folder.is_dir() else 0


@pytest.mark.slow
def test_ray_writes_one_process_s_files_byte_for_byte_even_with_a_worker_killed_mid_file(cfg, hf_model, tmp_path):
    """A CSV with bad rows on 2 workers, one of them killed once the first block is written: Ray restarts it and
    retries its batches, and the files are the single process's, byte for byte."""
    source = reviews_csv(tmp_path / "reviews.csv", 4000)
    output, result = tmp_path / "ray.csv", {}
    run = threading.Thread(target=lambda: result.update(classify_on_ray(cfg, source, output, hf_model,
                                                                        progress=False, workers=2)))
    run.start()
    killed = None
    while run.is_alive() and killed is None:
        workers = labeler_processes()
        if workers and checkpointed(output) >= 1:
            killed = workers[0].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    run.join(timeout=600)
    assert killed is not None and result, "a worker was killed mid-file and the run still finished"
    local = single_process(cfg, source, hf_model, tmp_path)
    same_files(local, result)
    assert result["rows_labelled"] == local["rows_labelled"] == 4000 - 81 and result["bad_rows"] == 81
    assert result["label_counts"] == local["label_counts"] and result["workers"] == 2
    assert not (tmp_path / "ray.csv.ray").exists(), "the work folder is removed once the output is whole"
    reasons = [r["reason"] for r in csv.DictReader(open(result["errors"], encoding="utf-8"))]
    assert reasons.count("empty text") == 80 and "3 fields but the header has 2" in reasons


@pytest.mark.slow
def test_a_jsonl_file_with_the_gguf_gives_one_process_s_files(cfg, tiny_gguf, tmp_path):
    lines = [json.dumps({"text": f"review {i}", "stars": i % 5}) for i in range(40)] + ["not json", "{}"]
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    q4 = tiny_gguf[3]
    ray = classify_on_ray(cfg, jsonl, tmp_path / "ray.jsonl", q4, progress=False, workers=1)
    same_files(single_process(cfg, jsonl, q4, tmp_path), ray)
    assert ray["rows_labelled"] == 40 and ray["bad_rows"] == 2


@pytest.mark.slow
def test_a_killed_driver_resumes_and_ends_as_an_uninterrupted_run(cfg, hf_model, tmp_path):
    source = reviews_csv(tmp_path / "reviews.csv", 3000)
    output = tmp_path / "ray.csv"
    command = [sys.executable, "-m", "helpers", "classify", str(source), "--output", str(output), "--trained",
               str(hf_model), "--engine", "ray", "--workers", "1", "--profile", "smoke"]
    driver = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # Killed once Ray has recorded two blocks and written a part: with one checkpoint entry alone the first part
        # could still be on its way to disk, and the rerun then found nothing to skip (a flake seen in make test).
        parts = output.with_name(output.name + ".ray") / "parts"
        while (checkpointed(output) < 2 or not any(parts.glob("*.parquet"))) and driver.poll() is None:
            time.sleep(0.05)
        assert driver.poll() is None, "the driver was still labelling when it was killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:  # the local Ray it started goes with it, as with a machine that died
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not output.exists(), "a killed run leaves no half-written output"
    resumed = classify_on_ray(cfg, source, output, hf_model, progress=False, workers=1)
    assert resumed["rows_skipped"] > 0 and resumed["rows_labelled"] + resumed["rows_skipped"] == 3000 - 61
    same_files(single_process(cfg, source, hf_model, tmp_path), resumed)


def test_the_labeler_reports_a_review_the_model_fails_on_alone(cfg, tmp_path, monkeypatch):
    """Without Ray: the actor's class on a batch, then the merge that writes the files."""
    import pandas as pd

    def picky(cfg, path):
        def probabilities(texts):
            if any("poison" in t for t in texts):
                raise ValueError("cannot take this one")
            return np.tile([0.2, 0.3, 0.5], (len(texts), 1))
        return probabilities

    monkeypatch.setattr(distributed, "load_classifier", picky)
    source = tmp_path / "reviews.csv"
    source.write_text("text\ngood\npoison\nfine\n", encoding="utf-8")
    job = plan_job(cfg, source, tmp_path / "out.csv", tmp_path)
    batches = pd.DataFrame({"batch": [1, 3], "rows": [[1, 2], [3]], "texts": [["good", "poison"], ["fine"]]})
    labelled = distributed.Labeler(cfg, str(tmp_path), threads=1)(batches)
    assert list(labelled["errors"]) == [["", "the model failed on this review alone (cannot take this one)"], [""]]
    (job.work / "parts").mkdir(parents=True)
    labelled.to_parquet(job.work / "parts" / "a.parquet")
    tally, counts = distributed._merge(cfg, job, job.work / "parts")
    assert job.output.read_text().splitlines()[1:] == ["good,1,positive,0.2,0.3,0.5", "fine,3,positive,0.2,0.3,0.5"]
    assert job.errors.read_text().splitlines() == ["row,reason", "2,the model failed on this review alone "
                                                                 "(cannot take this one)"]
    assert tally["bad"] == 1 and counts == {"positive": 2}


def test_without_ray_one_line_says_how_to_install_it(cfg, write, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ClassifyError, match=r"pip install -e '\.\[distributed\]'"):
        classify_on_ray(cfg, write("r.csv", "text\nok\n"), model_path=tmp_path)


def test_engine_options_are_checked_before_any_work(cfg, write, tmp_path):
    with pytest.raises(ClassifyError, match="--workers must be at least 1"):
        classify_on_ray(cfg, write("r.csv", "text\nok\n"), model_path=tmp_path, workers=0)
    result = subprocess.run([sys.executable, "-m", "helpers", "classify", str(write("s.csv", "text\nok\n")),
                             "--workers", "2"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--address and --workers are for --engine ray" in result.stderr


@pytest.mark.slow
def test_a_finished_output_is_left_and_a_half_done_one_is_refused(cfg, hf_model, tmp_path, monkeypatch):
    source = reviews_csv(tmp_path / "reviews.csv", 60)
    output = tmp_path / "out.csv"
    done = classify_file(cfg, source, output, hf_model, progress=False)
    before = output.read_bytes()
    monkeypatch.setattr(distributed, "start_ray", lambda *a: pytest.fail("a finished output starts no Ray"))
    again = classify_on_ray(cfg, source, output, hf_model, progress=False)
    assert again["rows_skipped"] == done["rows_labelled"] + done["bad_rows"] and output.read_bytes() == before
    output.unlink()
    real = classify.load_classifier
    monkeypatch.setattr(classify, "load_classifier", lambda cfg, path: broken_after(real(cfg, path), batches=2))
    with pytest.raises(RuntimeError, match="the model broke"):
        classify_file(cfg, source, output, hf_model, progress=False, batch_size=8)
    half = output.read_bytes()
    with pytest.raises(ClassifyError, match="without --engine ray: run that command again to finish it"):
        classify_on_ray(cfg, source, output, hf_model, progress=False)
    assert output.read_bytes() == half, "nothing is lost"


def broken_after(probabilities, batches: int):
    """A model that breaks after `batches` batches, like a run that dies half-way."""
    calls = []

    def counted(texts):
        if len(calls) == batches:
            raise RuntimeError("the model broke")
        calls.append(len(texts))
        return probabilities(texts)
    return counted


@pytest.mark.slow
def test_address_joins_a_running_cluster_as_the_docs_start_one(cfg, hf_model, tmp_path, monkeypatch):
    """`ray start --head` as docs/tools.md starts it (its own port and folder here, token authentication on as Ray 2.60
    starts it), then classify with --address and RAY_AUTH_MODE=token: the job runs on that cluster, with this
    checkout's helpers shipped to its workers, and the cluster outlives it."""
    port, log = 6400 + os.getpid() % 500, tmp_path / "head.log"
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port",
                             str(port), "--num-cpus", "4", "--object-store-memory",
                             str(distributed.OBJECT_STORE_BYTES), "--include-dashboard", "false",
                             "--disable-usage-stats", "--temp-dir", folder],
                            start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(240):
            if "Ray runtime started" in log.read_text() or head.poll() is not None:
                break
            time.sleep(0.5)
        assert head.poll() is None, log.read_text()[-2000:]
        source = reviews_csv(tmp_path / "reviews.csv", 120)
        local = single_process(cfg, source, hf_model, tmp_path)
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        joined = classify_on_ray(cfg, source, tmp_path / "ray.csv", hf_model, progress=False,
                                 address=f"127.0.0.1:{port}", workers=1)
        same_files(local, joined)
        assert joined["workers"] == 1 and head.poll() is None, "the cluster outlives the job"
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
