import os
from pathlib import Path

import pytest

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
    return cfg, source, f16, quantize_gguf(f16, folder / "tiny-q4_k_m.gguf")


class CourseRun:
    """The smoke course in one folder for the whole test session, each notebook run once with papermill and in order,
    as `make course` runs them (notebook 03 converts 02's model). `notebook(stem)` runs every notebook up to `stem` that
    has not run yet and returns the executed copy of `stem`; `through(stem)` returns the folder. A notebook that failed
    is not run again: the tests after it say which one failed. The tests that read it sit in one module, which
    `--dist loadscope` gives to one worker (`pytest_collection_modifyitems` checks it)."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.done, self.failed = run_dir, set(), {}
        self.parameters = {"profile": "smoke", "run_dir": str(run_dir),  # and an answer cache of its own
                           "overrides": {"response_cache": str(run_dir.parent / "responses.jsonl")}}

    def notebook(self, stem: str) -> Path:
        for nb in course_notebooks():
            out = self.run_dir / nb.stem / nb.name
            if nb.stem in self.failed:
                raise RuntimeError(f"{nb.stem} failed earlier in this session: {self.failed[nb.stem]}")
            if nb.stem not in self.done:
                try:
                    execute_notebook(nb, out, self.parameters)
                except Exception as err:
                    self.failed[nb.stem] = f"{type(err).__name__}: {str(err)[-500:]}"
                    raise
                self.done.add(nb.stem)
            if nb.stem == stem:
                return out
        raise KeyError(f"no notebook {stem!r} in notebooks/")

    def through(self, stem: str) -> Path:
        self.notebook(stem)
        return self.run_dir


@pytest.fixture(scope="session")
def course_run(tmp_path_factory) -> CourseRun:
    return CourseRun(tmp_path_factory.mktemp("course") / "run")


def pytest_collection_modifyitems(config, items):
    """The course run's tests first: under pytest-xdist the worker that takes their module runs the suite's longest
    chain (every notebook, each run again by nbval) while the other workers share the rest. Those tests must sit in
    one module, or a second worker would run the whole course again."""
    readers = {item.module.__name__ for item in items if "course_run" in getattr(item, "fixturenames", ())}
    if len(readers) > 1:
        raise pytest.UsageError(f"tests reading `course_run` sit in {', '.join(sorted(readers))}: move them into one "
                                f"module (tests/test_notebooks.py), or every xdist worker runs the course.")
    items.sort(key=lambda item: "course_run" not in getattr(item, "fixturenames", ()))
