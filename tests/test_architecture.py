"""The layers hold (flows -> tasks -> ptune; inside ptune: infra < data < model < evaluation < training <
registry < pipeline, serving < studies < cli; only shared infrastructure at the
top of ptune/), no import circle exists inside ptune, and modules and functions stay readable (docs/design.md).

The checker reads the source with `ast`, so imports inside functions and under TYPE_CHECKING count too:
a circle closed by a lazy import is still a circle. Each rule is also run on a small bad tree, so a
checker that can no longer see a violation fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"ptune": ("tasks", "flows", "prefect", "dvc"), "tasks": ("flows",)}
LAZY_ONLY = {"great_expectations": ("ptune.data.validation",)}  # allowed inside functions of these modules only
# Layers inside ptune, lowest first: a module may import its own layer and the ones below it.
LAYERS = (
    ("ptune.errors", "ptune.paths", "ptune.fileio", "ptune.packages", "ptune.config"),
    ("ptune.data",), ("ptune.model",), ("ptune.evaluation",), ("ptune.training",), ("ptune.registry",),
    ("ptune.pipeline", "ptune.serving"), ("ptune.studies",), ("ptune.cli",),
)
# The top of ptune/ holds the shared infrastructure only; everything else lives in a package named for its idea.
TOP_LEVEL = {"__init__.py", "errors.py", "paths.py", "fileio.py", "packages.py"}
# Split by idea, not by size (STYLE.md): about 300 lines a module, about 40 a function. A module past 300 lines
# is named here with the one idea that holds it together, so that growing one is a decision someone read.
LONG_MODULES: dict[str, str] = {
    "ptune/model/base.py": "a spec to a frozen model: resolve, load, dtype, device and threads, fingerprint",
    "ptune/model/memory.py": "one memory estimate from a config: parameters, weights, activations, what fits",
    "ptune/registry/tracking.py": "every MLflow tracking call of a training run (the registry's are in model_registry)",
}
GUIDE_LINES, MAX_FUNCTION_LINES = 300, 40


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> list[tuple[str, bool]]:
    """(imported module, at top level?) for every import in the file; relative imports resolved."""
    tree, here = ast.parse(path.read_text()), module_name(path, root)
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = here.split(".")[: -node.level] if path.name != "__init__.py" else here.split(".")
                base = ".".join([*package, base] if base else package)
            found.append((base, id(node) in top))
            found += [(f"{base}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def graph(root: Path, package: str = "ptune") -> dict[str, set[str]]:
    """Module -> modules of `package` it imports (a `from pkg import mod` counts as importing pkg.mod)."""
    files = {module_name(f, root): f for f in (root / package).rglob("*.py")}
    return {name: {target for target, _ in imports(path, root) if target in files and target != name}
            for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first search (each reported once, from its first module)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def layer_of(module: str) -> int:
    if module == "ptune":  # the package's __init__: a docstring
        return 0
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    return [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
            for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a)]


def forbidden_imports(root: Path) -> list[str]:
    problems = []
    for package, banned in FORBIDDEN.items():
        for path in (root / package).rglob("*.py"):
            here = module_name(path, root)
            for target, top in imports(path, root):
                head = target.split(".")[0]
                if head in banned:
                    problems.append(f"{here} imports {target}")
                if head in LAZY_ONLY and (top or here not in LAZY_ONLY[head]):
                    problems.append(f"{here} imports {target} ({'at import time' if top else 'outside its module'})")
    return problems


def size_problems(root: Path, long_modules: dict[str, str]) -> list[str]:
    """Functions past MAX_FUNCTION_LINES; modules past GUIDE_LINES not named in `long_modules`, and named
    ones that are back under it (the list stays a list of modules worth a look, not a list of exemptions)."""
    problems = []
    for package in ("ptune", "tasks", "flows"):
        for path in sorted((root / package).rglob("*.py")):
            source, name = path.read_text(), path.relative_to(root).as_posix()
            lines = len(source.splitlines())
            if lines > GUIDE_LINES and name not in long_modules:
                problems.append(f"{name}: {lines} lines; split it by idea, or name its one idea in LONG_MODULES")
            if lines <= GUIDE_LINES and name in long_modules:
                problems.append(f"{name}: {lines} lines; take it off LONG_MODULES")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        problems.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return problems


def private_imports(root: Path) -> list[str]:
    """Names with a leading underscore reached from another module of the project (`from m import _x`,
    `m._x`): a name used across modules is part of that module's interface and is named as such. Tests
    may reach into a module; the project's own code may not."""
    problems = []
    for package in ("ptune", "tasks", "flows", "bench"):
        for path in sorted((root / package).rglob("*.py")):
            tree, here, modules = ast.parse(path.read_text()), module_name(path, root), set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("ptune", "tasks", "flows"):
                    modules |= {alias.asname or alias.name for alias in node.names}
                    problems += [f"{here} imports {node.module}.{alias.name}" for alias in node.names
                                 if alias.name.startswith("_") and not alias.name.startswith("__")]
            problems += [f"{here} uses {ast.unparse(node)}" for node in ast.walk(tree)
                         if isinstance(node, ast.Attribute) and node.attr.startswith("_")
                         and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                         and node.value.id in modules]
    return problems


def stray_top_level(root: Path) -> list[str]:
    """Modules at the top of ptune/ other than the shared infrastructure (TOP_LEVEL)."""
    return sorted(p.name for p in (root / "ptune").glob("*.py") if p.name not in TOP_LEVEL)


def test_the_project_keeps_its_layers():
    assert forbidden_imports(ROOT) == []
    assert cycles(graph(ROOT)) == []
    assert layer_violations(graph(ROOT)) == []


def test_the_top_of_the_package_holds_only_shared_infrastructure():
    assert stray_top_level(ROOT) == []
    assert {p.name for p in (ROOT / "ptune").iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        "cli", "config", "data", "evaluation", "model", "pipeline", "registry", "serving", "studies", "training"}


def test_names_used_across_modules_are_public():
    assert private_imports(ROOT) == []


def test_modules_and_functions_stay_readable():
    assert size_problems(ROOT, LONG_MODULES) == []


@pytest.fixture
def bad_tree(tmp_path: Path) -> Path:
    """A tree that breaks every rule once: ptune imports prefect and tasks, tasks imports flows, a circle
    closed by a lazy import, a layer inversion, GX at import time, a long function, a long module not on the
    watch list, a private name used across modules, a loose module at the top of ptune/."""
    files = {
        "ptune/__init__.py": "",
        "ptune/errors.py": "from ptune.data import spec\n",
        "ptune/data/__init__.py": "",
        "ptune/data/spec.py": "import prefect\nimport great_expectations\n",
        "ptune/data/catalog.py": "from ptune.data import hub\n",
        "ptune/data/hub.py": "def f():\n    from ptune.data.catalog import x\n",
        "ptune/model/__init__.py": "from tasks import training\n",
        "tasks/__init__.py": "from flows import nightly\n",
        "flows/__init__.py": "def long():\n" + "    x = 1\n" * 45,
        "ptune/stages.py": "x = 1\n" * 301,
        "ptune/fileio.py": "x = 1\n",
        "tasks/data.py": "from ptune.data import spec, _cache\nspec._parse()\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checker_sees_each_kind_of_violation(bad_tree):
    assert sorted(forbidden_imports(bad_tree)) == [
        "ptune.data.spec imports great_expectations (at import time)", "ptune.data.spec imports prefect",
        "ptune.model imports tasks", "ptune.model imports tasks.training", "tasks imports flows",
        "tasks imports flows.nightly"]
    assert cycles(graph(bad_tree)) == [["ptune.data.catalog", "ptune.data.hub", "ptune.data.catalog"]]
    assert sorted(layer_violations(graph(bad_tree))) == ["ptune.errors (layer 0) imports ptune.data (layer 1)",
                                                 "ptune.errors (layer 0) imports ptune.data.spec (layer 1)"]
    assert sorted(size_problems(bad_tree, {"ptune/fileio.py": "listed, then shrunk"})) == [
        "flows/__init__.py:1 long: 46 lines", "ptune/fileio.py: 1 lines; take it off LONG_MODULES",
        "ptune/stages.py: 301 lines; split it by idea, or name its one idea in LONG_MODULES"]
    assert sorted(size_problems(bad_tree, {"ptune/stages.py": "one idea", "ptune/fileio.py": "x"})) == [
        "flows/__init__.py:1 long: 46 lines", "ptune/fileio.py: 1 lines; take it off LONG_MODULES"]
    assert private_imports(bad_tree) == ["tasks.data imports ptune.data._cache", "tasks.data uses spec._parse"]
    assert stray_top_level(bad_tree) == ["stages.py"]
