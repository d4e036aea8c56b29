"""Run a chapter's `take-home` cells on their own, as a learner's script would.

A learner copies the cells tagged `take-home` into a project of their own. This module proves that works: it pulls the
tagged cells out of a notebook, puts a preamble in front that defines only what a learner's project would have (a model
folder, a few records as plain dicts, a port, a few numbers: `inputs`), and runs the result in a fresh Python process
with nothing from `helpers` importable. Cells may use top-level `await`, as a notebook allows: they are compiled with
`ast.PyCF_ALLOW_TOP_LEVEL_AWAIT` and run on one event loop, which is what a script's `asyncio.run(main())` does.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

TAG = "take-home"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

RUNNER = '''\
import ast, asyncio, json, sys
sys.modules["helpers"] = None  # the course's own package is not the learner's: importing it fails here
cells = json.loads(open(sys.argv[1]).read())
loop = asyncio.new_event_loop()
scope = {"__name__": "__main__"}
for number, source in enumerate(cells):
    code = compile(source, f"<take-home cell {number}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, scope)
    if asyncio.iscoroutine(result):
        loop.run_until_complete(result)
loop.close()
'''


def notebook_path(stem: str) -> Path:
    return NOTEBOOKS / f"{stem}.ipynb"


def take_home_cells(stem: str) -> list[str]:
    """The source of every code cell of notebook `stem` tagged `take-home`, in order."""
    nb = nbformat.read(notebook_path(stem), as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and TAG in c.metadata.get("tags", [])]


def preamble(inputs: dict) -> str:
    """`name = value` lines for plain values (str, numbers, lists and dicts of them): what the learner's project has."""
    return "\n".join(f"{name} = {value!r}" for name, value in inputs.items())


def run_take_home(stem: str, inputs: dict, workdir: Path, timeout: int = 900, env: dict | None = None):
    """Run notebook `stem`'s take-home cells after a preamble of `inputs`, in `workdir`, in a fresh interpreter that
    cannot import the course's helpers. Returns the finished process (stdout, stderr); fails with both on a crash."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cells = take_home_cells(stem)
    assert cells, f"{stem} has no cell tagged {TAG!r}"
    (workdir / "cells.json").write_text(json.dumps([preamble(inputs), *cells]))
    (workdir / "run_take_home.py").write_text(RUNNER)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment.update(env or {})
    # -I: isolated mode: neither the current folder nor the repository (where `helpers` lives) is on sys.path
    done = subprocess.run([sys.executable, "-I", "run_take_home.py", "cells.json"], cwd=workdir, env=environment,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{stem}'s take-home cells failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done
