"""The import graph of core/: no cycles, and every import points down the layers (issue 18).

Imports inside functions count too: a function-level import that closes a cycle is still a cycle.
Layers, bottom to top: the shared base (errors, files, paths) → data → train → explain/serve → runs → cli.
Inside core/runs the modules are layered as well (RUNS_ORDER): the run folder, provenance, process liveness, the
index, the store, jobs, the launcher, sweeps, reproduce, the kinds, and the processes that run them.
"""
import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"
LAYERS = {"errors": 0, "files": 0, "paths": 0, "access": 0, "data": 1, "train": 2, "explain": 3, "serve": 3,
          "report": 3, "runs": 4,
          "cli": 5, "__main__": 6, "__init__": 0}
RUNS_ORDER = ["folder", "provenance", "proc", "eta", "index", "store", "groups", "launcher", "jobs", "sweeps",
              "reproduce", "tasks", "worker", "ddp", "__init__"]


def _modules() -> dict[str, Path]:
    out = {}
    for f in CORE.rglob("*.py"):
        parts = ("core",) + f.relative_to(CORE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, known: set) -> set[str]:
    """Every core module `name` imports, wherever the import statement stands."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")
                base = ".".join(up[:len(up) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith("core") and t != name and t != "core":
                found.add(t)
    return found


def _rank(mod: str) -> tuple:
    parts = mod.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    layer = LAYERS.get(top)
    assert layer is not None, f"{mod}: add core/{top} to LAYERS in this test (where does it stand?)"
    sub = 0
    if top == "runs" and len(parts) > 2:
        assert parts[2] in RUNS_ORDER, f"{mod}: add it to RUNS_ORDER in this test"
        sub = RUNS_ORDER.index(parts[2])
    return layer, sub


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def test_no_module_imports_up_a_layer():
    bad = []
    for mod, deps in _graph().items():
        for d in deps:
            if d.startswith("core.") and d.count(".") == 1 and d.endswith("__init__"):
                continue
            if _rank(d) > _rank(mod) and not mod.endswith("__init__") and d != "core":
                bad.append(f"{mod} → {d}")
    assert not bad, "imports that point up the layers:\n" + "\n".join(sorted(bad))


def test_the_import_graph_of_core_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" → ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_layer_test_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from core.runs.store import RunStore\n    import core.cli\n")
    assert _imports("core.data.m", f, {"core.runs.store", "core.cli", "core.runs"}) == {"core.runs.store", "core.cli"}


def test_the_cli_help_imports_no_heavy_library():
    """`python -m core --help` answers without torch, torchvision, pandas, numpy or PIL (its start time is
    in bench/, not asserted here)."""
    import subprocess
    import sys
    code = ("import runpy, sys\nsys.argv = ['core', '--help']\ntry:\n    runpy.run_module('core', run_name='__main__')\n"
            "except SystemExit:\n    pass\nheavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'torchvision', 'pandas', 'numpy', 'PIL'})\nprint('HEAVY', heavy)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=str(CORE.parent))
    assert "usage: python -m core" in p.stdout and "HEAVY []" in p.stdout, p.stdout[-500:] + p.stderr[-2000:]
