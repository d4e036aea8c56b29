"""The package's layering, read from the source: helper imports (at module top or inside functions) form no cycle,
and the mechanisms (loading, training, scoring, exporting, serving, metrics, plots) import nothing from the
experiments above them or the faces on top. A new helper module must be placed on a floor here."""
import ast
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parent.parent / "helpers"
MECHANISMS = {"config", "runs", "data", "model", "masking", "training", "evaluate", "gguf", "serve", "encoder", "plots", "classify",
              "distributed", "predict", "modelcard"}
EXPERIMENTS = {"ablation", "diagnostics", "baselines", "fewshot", "alternatives", "formats", "distill"}
FACES = {"__init__", "__main__", "cli", "bench", "report", "teaching", "demo", "publish"}


def helper_imports(path: Path) -> set[str]:
    """The helpers modules that `path` imports anywhere in its code."""
    return set().union(*(helper_imports_of(node) for node in ast.walk(ast.parse(path.read_text()))
                         if isinstance(node, (ast.Import, ast.ImportFrom))))


def nested_helper_imports(path: Path) -> list[str]:
    """`module:line` of every helpers import that sits inside a function or class instead of at the module top."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    return [f"{path.stem}:{node.lineno}" for node in ast.walk(tree) if id(node) not in top
            and isinstance(node, (ast.Import, ast.ImportFrom)) and helper_imports_of(node)]


def helper_imports_of(node) -> set[str]:
    if isinstance(node, ast.ImportFrom):
        return {a.name for a in node.names} if node.module == "helpers" else (
            {node.module.split(".")[1]} if (node.module or "").startswith("helpers.") else set())
    return {a.name.split(".")[1] for a in node.names if a.name.startswith("helpers.")}


GRAPH = {path.stem: helper_imports(path) for path in HELPERS.glob("*.py")}


def find_cycle(graph: dict) -> list | None:
    """One cycle of module names, or None (depth-first search)."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [nxt])):
                return cycle
        state[node] = "done"
        return None
    return next((c for node in sorted(graph) if node not in state and (c := visit(node, [node]))), None)


def test_every_helper_module_sits_on_a_floor():
    assert set(GRAPH) == MECHANISMS | EXPERIMENTS | FACES


def test_helper_imports_form_no_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


@pytest.mark.parametrize("module", sorted(MECHANISMS))
def test_mechanisms_import_nothing_above_them(module):
    assert GRAPH[module] <= MECHANISMS, f"{module} imports {sorted(GRAPH[module] - MECHANISMS)} from a floor above it"


def test_experiments_import_no_face():
    assert all(GRAPH[m] <= MECHANISMS | EXPERIMENTS for m in EXPERIMENTS)


def test_helper_imports_sit_at_the_module_top():
    assert [hit for path in sorted(HELPERS.glob("*.py")) for hit in nested_helper_imports(path)] == []


def test_the_checks_can_fail(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    # the cycle this package had: the masking guard's module ran the ablation, which imports training
    assert find_cycle({**GRAPH, "masking": GRAPH["masking"] | {"training"}}) is not None
    hidden = tmp_path / "hidden.py"
    hidden.write_text("def f():\n    from helpers.training import train\n    import helpers.cli\n")
    assert helper_imports(hidden) == {"training", "cli"}  # imports inside functions count too
    assert nested_helper_imports(hidden) == ["hidden:2", "hidden:3"]


def test_the_entry_point_holds_no_torch_transformers_or_sklearn():
    """`python -m helpers course` imports every helper and stays alive beside each notebook kernel for the whole course:
    the heavy libraries load in the kernels, where they are used, not twice."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "sklearn", "trl", "peft", "datasets", "llama_cpp")
    code = f"import sys, helpers.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
