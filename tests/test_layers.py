"""The package's layers, in the order its imports follow (../shared/reference/layout.md):

    the book -> checks -> kinds -> pitfalls (the catalogue) -> audit -> faces

No module imports a later layer, not even inside a function; no face imports another; no two
modules import each other at import time. The Hypothesis strategies are the catalogue's
examples, so they sit below it (linreg.testing re-exports them for users).
"""

from __future__ import annotations

import ast
from pathlib import Path

import linreg

ROOT = Path(linreg.__file__).parent


def face(name: str) -> str | None:
    """Return which face a module belongs to (the command line or the pytest plugin), if any."""
    if name in ("linreg.cli", "linreg.__main__") or name.startswith("linreg.cli."):
        return "cli"
    return "plugin" if name == "linreg.testing.plugin" else None


def layer(name: str) -> int:
    """Return the layer a module sits in: its folder says it."""
    if face(name):
        return 5
    if name.startswith("linreg.audit"):
        return 4
    if name.startswith("linreg.pitfalls"):
        return 3
    if name.startswith("linreg.kinds") or name in ("linreg.testing", "linreg.testing.strategies"):
        return 2
    if name == "linreg.checks":
        return 1
    if name == "linreg":
        return 6  # the map: it may name every layer
    return 0


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("linreg", *path.relative_to(ROOT).with_suffix("").parts))
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path], *, top_level_only: bool) -> set[str]:
    """Return the linreg modules path imports (anywhere in it, or at import time only)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module in known:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(known)
            rest = [a for a in node.names if f"{node.module}.{a.name}" not in known]
            found |= subs | ({node.module} if rest else set())
    return found


def test_no_module_imports_a_later_layer_nor_a_face_another_face() -> None:
    known = modules()
    wrong = {
        (name, target)
        for name, path in known.items()
        for target in imports(path, known, top_level_only=False)
        if layer(target) > layer(name)
        or (face(name) and face(target) and face(name) != face(target))
    }
    assert wrong == set()


def test_no_two_modules_import_each_other_at_import_time() -> None:
    known = modules()
    graph = {
        name: imports(path, known, top_level_only=True) - {name} for name, path in known.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for target in graph[name]:
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
    assert cycles == []


def test_the_layer_test_sees_a_wrong_import_even_inside_a_function(tmp_path: Path) -> None:
    """The test has teeth: a catalogue module that imports the command line lazily is found."""
    known = modules()
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def show():\n    from linreg.cli import main\n    return main\n")
    assert imports(wrong, known, top_level_only=False) == {"linreg.cli"}
    assert imports(wrong, known, top_level_only=True) == set()
    assert layer("linreg.cli") > layer("linreg.pitfalls.rebinding")


def test_no_module_imports_another_modules_private_name() -> None:
    """A name with a leading underscore is its module's own (a private module, _book or
    _validate, may be imported whole: its public names are the package's)."""
    known = modules()
    wrong = set()
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in known:
                wrong |= {
                    (name, f"{node.module}.{a.name}")
                    for a in node.names
                    if a.name.startswith("_") and f"{node.module}.{a.name}" not in known
                }
    assert wrong == set()


def test_the_readme_layout_names_every_module_and_folder() -> None:
    """The README's Layout is the map a newcomer reads: each module and folder of linreg is
    named in it (the catalogue's own pitfall modules are listed by the catalogue table)."""
    readme = (ROOT.parent / "README.md").read_text()
    start = readme.index("```text", readme.index("## Layout"))
    block = readme[start : readme.index("```", start + 3)]

    def shown_as(path: Path) -> str | None:
        if path.parent == ROOT and path.name in ("__init__.py", "__main__.py"):
            return None  # the map itself, and python -m linreg
        if path.parent == ROOT / "pitfalls" and not path.name.startswith("_"):
            return None
        return f"{path.parent.name}/" if path.name == "__init__.py" else path.name

    named = {path: shown_as(path) for path in ROOT.rglob("*.py")}
    missing = sorted(
        str(p.relative_to(ROOT)) for p, name in named.items() if name and name not in block
    )
    assert missing == []
