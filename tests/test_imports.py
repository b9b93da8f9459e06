"""Every module of the toolkit imports, and the project's modules import one another one way.

The import graph is read from the source (every ``import`` statement, function-level ones
included, since a lazy import is still a dependency), over the runtime packages, the top-level
modules, ``tests/``, ``benchmarks/`` and ``tools/``: it must have no cycle, and no stage imports a
later one (``STAGES``). The runtime modules
are the ones ``pyproject.toml`` installs, and every package folder is listed there.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("tests", "benchmarks", "tools")


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    """Module name -> file, for every Python file of the project."""
    setuptools = _setuptools()
    files = [REPO / f"{name}.py" for name in setuptools["py-modules"]]
    for folder in (*(p for p in setuptools["packages"] if "." not in p), *SOURCE_FOLDERS):
        files += sorted((REPO / folder).rglob("*.py"))
    return {_module_name(path): path for path in files}


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that importing ``name`` runs last: ``name`` or its nearest package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [_target(alias.name, modules) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}".strip(".")
                targets = [_target(f"{base}.{alias.name}", modules) for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_the_project_modules():
    modules = project_modules()
    graph = import_graph(modules)
    assert "generation.runs" in graph["generation.generate"]  # the graph is read as it should be
    assert "generation.runs" in graph["generation.ray_pool"]
    assert cycles(graph) == []
    folders: dict[str, set[str]] = {}
    for module, imported in graph.items():
        top = module.split(".")[0]
        folders.setdefault(top, set()).update(t.split(".")[0] for t in imported if t.split(".")[0] != top)
    assert cycles({top: folders.get(top, set()) & set(folders) for top in folders}) == []


def test_the_cycle_finder_finds_lazy_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_pyproject_installs_every_package_and_every_module_imports():
    setuptools = _setuptools()
    listed = set(setuptools["packages"])
    for top in (p for p in listed if "." not in p):
        for init in (REPO / top).rglob("__init__.py"):
            assert _module_name(init) in listed, f"{init.parent} is not in pyproject's packages"
    runtime = [
        name for name in project_modules() if name in setuptools["py-modules"] or name.split(".")[0] in listed
    ]
    for name in runtime:
        importlib.import_module(name)


# The stages, upstream first: a module may import its own stage and the ones before it, never a
# later one (eval importing the generation loop is downstream importing upstream; training and eval
# share a stage, and the cycle check keeps them from importing each other both ways). A module's
# stage is that of its top-level module or package.
STAGES = (
    ("imagenet_think_errors",),
    ("common",),
    ("generation",),
    ("release",),
    ("imagenet_think",),
    ("training", "eval"),
    (
        "imagenet_think_cli",
        "imagenet_think_demo",
        "imagenet_think_preview",
        "preflight",
        "benchmarks",
        "tools",
        "tests",
    ),
)


def stage_of(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(STAGES) if top in names)


def backward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) for every import of a later stage."""
    return [
        (module, target)
        for module, imported in sorted(graph.items())
        for target in sorted(imported)
        if stage_of(target) > stage_of(module)
    ]


def test_every_module_has_a_stage_and_imports_only_upstream():
    graph = import_graph(project_modules())
    for module in graph:
        stage_of(module)  # a new top-level module or package must be given its place in STAGES
    assert backward_imports(graph) == []


def test_the_direction_check_finds_a_planted_backward_import(tmp_path):
    """A generation module that imports the release (here lazily, in a function), and a common one
    that imports the builder, are found; eval reusing the generation loop is not."""
    modules = project_modules()
    planted = {
        "generation.planted": "def columns():\n    from release.schema import RECORD_COLUMNS\n    return RECORD_COLUMNS\n",
        "common.planted": "import imagenet_think\n",
        "eval.planted": "from generation.generate import run\n",
    }
    for name, source in planted.items():
        path = tmp_path / f"{name}.py"
        path.write_text(source, encoding="utf-8")
        modules[name] = path
    assert backward_imports(import_graph(modules)) == [
        ("common.planted", "imagenet_think"),
        ("generation.planted", "release.schema"),
    ]


# Folders whose files run as scripts (``python training/sft.py``, ``accelerate launch ...``): Python
# puts the script's folder first on sys.path, so a file there named like a top-level package hides it.
SCRIPT_FOLDERS = ("training", "tools")


def shadowed_packages(modules: dict[str, Path]) -> list[str]:
    """Files of the script folders that a top-level module or package of the project shares a name with."""
    tops = {name.split(".")[0] for name in modules}
    return sorted(
        name
        for name in modules
        if name.split(".")[0] in SCRIPT_FOLDERS and name.count(".") == 1 and name.split(".")[1] in tops
    )


def test_no_script_folder_hides_a_top_level_package(tmp_path):
    modules = project_modules()
    assert shadowed_packages(modules) == []
    planted = tmp_path / "common.py"  # training/common.py would hide common/ from training/sft.py
    planted.write_text("", encoding="utf-8")
    assert shadowed_packages({**modules, "training.common": planted}) == ["training.common"]
