"""The architecture as the folder tree shows it: packages in layers that only import downward,
no import cycles between modules, and a README whose layout table matches the folders and
whose links (and the docs') stay inside the repository."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Packages from the bottom up. A package imports only from packages of lower layers (and
#: from itself); packages in the same layer do not import each other. The design card's
#: folders are top-level packages; everything else is a subpackage of ``qexplorer``.
LAYERS: list[set[str]] = [
    {"schemas"},  # topic contracts, their codec, the topic registry
    {"qexplorer.config"},  # settings in slices
    # the search protocol and engines; labelled marketplaces and corpora; Kafka as a library
    {"qexplorer.search", "qexplorer.marketplace", "qexplorer.kafka"},
    # what a worker does, free of transport; local services and isolated runs
    {"agents", "qexplorer.harness"},
    # the runtime worker; the review service; offline evaluation
    {"streams", "qexplorer.review", "qexplorer.evaluation"},
    {"trainer", "qexplorer.serving"},  # what makes and promotes a model; the model server
    {"qexplorer.simulation"},  # deployments simulated: the replay, the curves
    {"bench"},  # benchmarks against raw ceilings
    {"qexplorer.cli", "examples"},  # the qexplorer command; a consumer of detections
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
#: The installed distribution's own namespace: it holds layers, and is none itself.
NAMESPACE = "qexplorer"
#: The design card's top-level folders: the only installed top-level names besides it.
CARD = {"schemas", "agents", "streams", "trainer"}


def _package(module: str) -> str:
    """The layered package a module belongs to (``qexplorer.search.query`` ->
    ``qexplorer.search``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == NAMESPACE and len(parts) > 1 else parts[0]


def _modules() -> dict[str, Path]:
    """Module name -> file, for every Python file of the layered packages."""
    found = {}
    for package in RANK:
        for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, *, typing_too: bool) -> set[str]:
    """The project modules a file imports (module level and inside functions); imports under
    ``if TYPE_CHECKING:`` only with ``typing_too``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    if not typing_too:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _is_type_checking(node):
                skipped.update(id(n) for child in node.body for n in ast.walk(child))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        out.update(name for name in names if name in MODULES)
    return out


def test_every_package_of_the_tree_has_a_layer():
    top = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", NAMESPACE}
    inside = {f"{NAMESPACE}.{p.parent.name}" for p in (ROOT / NAMESPACE).glob("*/__init__.py")}
    assert top | inside | {"examples"} == set(RANK), "a new package needs a layer here"


def test_the_namespace_package_imports_nothing():
    assert not _imports(ROOT / NAMESPACE / "__init__.py", typing_too=True)


def test_the_wheel_installs_only_the_card_folders_and_the_namespace():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in include} == CARD | {NAMESPACE}


def test_training_imports_neither_the_worker_nor_the_review_service():
    wrong = [f"{module} imports {target}" for module, path in MODULES.items()
             if _package(module) == "trainer"
             for target in _imports(path, typing_too=True)
             if _package(target) in ("streams", "qexplorer.review")]
    assert not wrong, "\n".join(wrong)


def test_packages_only_import_from_lower_layers():
    wrong = []
    for module, path in MODULES.items():
        for target in _imports(path, typing_too=True):
            here, there = _package(module), _package(target)
            if here != there and RANK[there] >= RANK[here]:
                wrong.append(f"{module} imports {target} ({here} is not above {there})")
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back():
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        graph[module] |= _imports(path, typing_too=False) - {module}
    for target in list(graph.values()):
        for name in target:
            graph.setdefault(name, set())
    assert not _cycles(graph)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert not _cycles({"a": {"b"}, "b": set()})


# --- the README --------------------------------------------------------------------------------

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def test_the_readme_layout_table_matches_the_folders():
    listed = set(re.findall(r"^\| `([^`]+)/` \|", _section("Layout"), re.M))
    tracked = {p.name for p in ROOT.iterdir()
               if p.is_dir() and not p.name.startswith(".") and p.name not in (
                   "__pycache__", "build", "runs") and not p.name.endswith(".egg-info")}
    inside = {f"{NAMESPACE}/{p.parent.name}" for p in (ROOT / NAMESPACE).glob("*/__init__.py")}
    assert listed == (tracked - {NAMESPACE}) | inside


def test_the_readme_topic_table_lists_the_registry():
    from schemas.topics import REGISTRY

    listed = set(re.findall(r"^\| `([a-z-]+)` \|", _section("Topics"), re.M))
    assert listed == {spec.name for spec in REGISTRY}


def test_the_readme_is_short_and_gives_the_commands_ci_runs():
    assert len(README.splitlines()) <= 200
    assert "make test" in README and "make demo" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("page", ["README.md", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_links_stay_inside_the_repository_and_resolve(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    base = (ROOT / page).parent
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        resolved = (base / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{page} sends readers outside: {target}"
        assert resolved.exists(), f"{page} links to a missing file: {target}"
    assert "../shared" not in text, f"{page} sends readers to ../shared"


def test_the_operations_page_lists_every_setting():
    from qexplorer.config.settings import environment_variables

    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = [r["variable"] for r in environment_variables() if f"`{r['variable']}`" not in page]
    assert not missing, f"docs/operations.md does not list {missing}"
