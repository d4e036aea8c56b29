import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from helpers.config import make_config
from helpers.runs import course_notebooks, execute_notebook

# `make test` runs the suite on pytest-xdist workers, one per core. Each worker, and every kernel, command and llama.cpp
# server it starts, takes its share of the cores (OMP_NUM_THREADS, read by `CourseConfig.threads`): two workers with two
# OpenMP threads each on 2 cores spin at every barrier (a course ran 7x slower beside two busy processes).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


@pytest.fixture(autouse=True)
def no_paid_api(monkeypatch):
    """No test reaches the OpenAI API with the developer's key (notebook 04 and `compare` would use it): a test that
    needs a key sets a fake one itself. Notebook kernels and commands started by a test inherit this environment."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def cfg(tmp_path):
    """The smoke profile (tiny model, tiny sizes) with the shared model cache, a private run folder and a private
    response cache (never the developer's own answers)."""
    return make_config("smoke", run_dir=tmp_path / "run", response_cache=str(tmp_path / "responses.jsonl"))


@pytest.fixture
def write(tmp_path):
    """write(name, text_or_bytes) -> path of a file in a temporary folder."""
    def _write(name, content):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path
    return _write


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """The tiny model converted to f16 and quantized to Q4_K_M by llama.cpp's own tools."""
    from helpers.config import make_config
    from helpers.gguf import convert_to_gguf, quantize_gguf
    from helpers.model import resolve_model

    folder = tmp_path_factory.mktemp("gguf")
    cfg = make_config("smoke", run_dir=folder)
    source = Path(resolve_model(cfg))
    f16 = convert_to_gguf(cfg, source, folder / "tiny-f16.gguf")
    return cfg, source, f16, quantize_gguf(f16, folder / "tiny-q4_k_m.gguf", threads=cfg.threads)


class CourseRun:
    """The smoke course in one folder for the whole test session, each notebook run once with papermill and in order,
    as `make course` runs them (notebook 03 converts 02's model). `notebook(stem)` runs every notebook up to `stem` that
    has not run yet and returns the executed copy of `stem`; `through(stem)` returns the folder. Every pytest-xdist
    worker shares the one folder: a file lock per notebook lets the first worker that needs it run it while the others
    wait, and a marker file says it finished. A notebook that failed is not run again: the tests after it say which
    one failed."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.parameters = {"profile": "smoke", "run_dir": str(run_dir),  # and an answer cache of its own
                           "overrides": {"response_cache": str(run_dir.parent / "responses.jsonl")}}

    def notebook(self, stem: str) -> Path:
        for nb in course_notebooks():
            out = self.run_dir / nb.stem / nb.name
            done, failed = (self.run_dir.parent / f"{nb.stem}.{end}" for end in ("done", "failed"))
            with FileLock(self.run_dir.parent / f"{nb.stem}.lock"):
                if failed.exists():
                    raise RuntimeError(f"{nb.stem} failed earlier in this session: {failed.read_text()}")
                if not done.exists():
                    try:
                        execute_notebook(nb, out, self.parameters)
                    except Exception as err:
                        failed.write_text(f"{type(err).__name__}: {str(err)[-500:]}")
                        raise
                    done.touch()
            if nb.stem == stem:
                return out
        raise KeyError(f"no notebook {stem!r} in notebooks/")

    def through(self, stem: str) -> Path:
        self.notebook(stem)
        return self.run_dir


CHROMIUM = os.environ.get("CHROMIUM") or next(
    (p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium")) if p and Path(p).is_file()), None)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (the demo page's and the course site's tests)."""
    if CHROMIUM is None:
        pytest.fail("No Chromium to drive: run `make setup` (as root it installs Debian's chromium), or "
                    "`sudo apt-get install chromium`, or set CHROMIUM=/path/to/chromium.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:  # the flags keep Chromium off the network it has no access to
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def course_run(tmp_path_factory) -> CourseRun:
    """One course run for all workers: under xdist in the folder above each worker's own temporary folder."""
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if "PYTEST_XDIST_WORKER" in os.environ else shared
    folder = shared / "course"
    folder.mkdir(exist_ok=True)
    return CourseRun(folder / "run")


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects: a test that reads the course run is always slow
def pytest_collection_modifyitems(config, items):
    """The order pytest-xdist hands out modules (`--dist loadscope --no-loadscope-reorder`): first the chapters, read
    from the course run, the suite's longest chain (every notebook, each run again by nbval), which one worker runs;
    meanwhile the other workers take the modules with slow tests, then the worked solutions, which read the chapters'
    outputs and by then find them made, and last the quick unit tests, which fill whichever worker is free."""
    for item in items:
        if "course_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}

    def order(item):
        module = item.module.__name__
        reads = "course_run" in getattr(item, "fixturenames", ())
        return (0 if module.endswith("test_notebooks") else 2 if reads or module.endswith("test_solutions") else
                1 if module in slow else 3)
    items.sort(key=order)
