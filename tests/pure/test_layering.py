"""The package's shape, read from its source: no import cycles (imports inside functions
count: they only hide a cycle), no package module over 600 lines (migrations aside), and no
web module reaching into the relay's links (sites and chargers change through the services)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "harmone"
ROOT = PACKAGE.parent
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.relative_to(PACKAGE).parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> set[str]:
    """The package modules `name` imports when it runs (not those for type checkers only)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in MODULES and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert graph["harmone.web.app"] >= {"harmone.web.api.sites", "harmone.web.runtime"}
    assert _cycles(graph) == []


def test_no_web_or_services_module_over_600_lines() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if name.startswith(("harmone.web", "harmone.services"))
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def _long_modules(modules: dict[str, Path]) -> dict[str, int]:
    return {
        name: n
        for name, path in modules.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }


def test_the_length_check_finds_a_long_module(tmp_path: Path) -> None:
    short, long = tmp_path / "short.py", tmp_path / "long.py"
    short.write_text("x = 1\n" * MAX_LINES, encoding="utf-8")
    long.write_text("x = 1\n" * (MAX_LINES + 1), encoding="utf-8")
    assert _long_modules({"short": short, "long": long}) == {"long": MAX_LINES + 1}


def test_no_package_module_over_600_lines() -> None:
    """Every module of the package, migrations aside (`_modules` leaves them out)."""
    assert "harmone.sim.charger" in MODULES and "harmone.web.app" in MODULES
    assert not any("migrations" in name for name in MODULES)
    assert _long_modules(MODULES) == {}


def test_the_web_layer_does_not_touch_the_relays_links() -> None:
    """Changes that affect live connections are the services' (harmone.services)."""
    offenders = [
        name
        for name, path in MODULES.items()
        if name.startswith("harmone.web.") and ".links" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_the_web_layer_reaches_load_management_only_through_its_service() -> None:
    """No web module imports the controller, the state or the plan (the service's insides)."""
    reached = {
        (name, target)
        for name, path in MODULES.items()
        if name.startswith("harmone.web.")
        for target in _imports(name, path)
        if target.startswith("harmone.loadmgmt") and target != "harmone.loadmgmt.service"
    }
    assert reached == set()
    web = " ".join(p.read_text(encoding="utf-8") for n, p in MODULES.items() if "web." in n)
    assert ".controller(" not in web and ".controllers" not in web


# -- docs/architecture.md names real things ------------------------------------------------------

#: `harmone/x.py`, `harmone/x.py:name` or `harmone/x.py:Class.method`, and `tests/…py`
_REFERENCE = re.compile(r"`((?:harmone|tests)/[\w/]+\.py)(?::([\w.]+))?`")


def _names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _defines(tree: ast.Module, qualified: str) -> bool:
    """Whether `qualified` (name, or Class.member…) is defined in the module `tree`."""
    body: list[ast.stmt] = tree.body
    for part in qualified.split("."):
        found = next((node for node in body if part in _names(node)), None)
        if found is None:
            return False
        body = found.body if isinstance(found, ast.ClassDef) else []
    return True


def _missing_references(text: str) -> tuple[list[str], int]:
    missing, names = [], 0
    for path, qualified in _REFERENCE.findall(text):
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif qualified:
            names += 1
            if not _defines(ast.parse(file.read_text(encoding="utf-8")), qualified):
                missing.append(f"{path}:{qualified}")
    return missing, names


def test_the_reference_check_finds_a_missing_name() -> None:
    text = (
        "`harmone/relay/link.py:ChargerLink._from_charger` `harmone/clock.py:Clock` "
        "`harmone/relay/link.py:ChargerLink.nothing_like_this` `harmone/no_such_module.py` "
        "`harmone/relay/link.py:no_such_function`"
    )
    assert _missing_references(text) == (
        [
            "harmone/relay/link.py:ChargerLink.nothing_like_this",
            "harmone/no_such_module.py",
            "harmone/relay/link.py:no_such_function",
        ],
        4,
    )


def test_every_name_in_the_architecture_note_exists() -> None:
    """docs/architecture.md draws its paths with real module and function names."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing, names = _missing_references(text)
    assert missing == []
    assert names >= 60  # the three paths are drawn with names, not prose
