"""The layout of the packages (DESIGN.md, "Layout and dependency direction"), checked on the source.

* every first-party import goes down the layers below, never up or sideways into a layer not listed;
* no import circle between modules;
* first-party imports sit at the top of modules (the CLI alone imports lazily, to keep
  ``recon --help`` fast; tinycudann, pyvista and ray are third-party and imported where used);
* every module states its public names in ``__all__``, and every name there resolves;
* no module runs past 600 lines without saying why at its top.
"""

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("optics", "calibration", "recon")

#: Layer → the layers it may import (itself always).
_BASE = {"optics", "recon.errors", "recon.io", "recon.threads"}
ALLOWED = {
    "optics": set(),
    "calibration": {"optics"},
    "recon": set(),  # recon/__init__.py: the lazy Python API imports on first use only
    "recon.errors": {"optics"},
    "recon.threads": set(),
    "recon.io": {"optics", "recon.errors"},
    "recon.model": _BASE,
    "recon.analysis": _BASE,
    "recon.simulation": _BASE | {"calibration", "recon.model", "recon.analysis"},
    "recon.fitting": _BASE | {"calibration", "recon.model", "recon.analysis"},
    "recon.reporting": _BASE | {"recon.model", "recon.analysis", "recon.fitting"},
    "recon.environment": {"recon", "recon.model"},
    "recon.campaign": _BASE,
    "recon.jobs": _BASE | {"calibration", "recon.model", "recon.analysis", "recon.simulation",
                           "recon.campaign", "recon.fitting", "recon.reporting", "recon.environment"},
}
ALLOWED["recon.cli"] = ALLOWED["recon.jobs"] | {"recon.jobs"}


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


MODULES = dict(_modules())


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] != "recon" or len(parts) == 1 else ".".join(parts[:2])


def _imports(path: pathlib.Path):
    """(module imported, line, at top level?) for every first-party import of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield name, node.lineno, id(node) in top


def test_every_import_goes_down_the_layers():
    wrong = []
    for module, path in MODULES.items():
        here = _layer(module)
        for target, line, _ in _imports(path):
            there = _layer(target)
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_layers_are_known():
    assert {_layer(m) for m in MODULES} <= set(ALLOWED)


def test_no_import_circle_between_modules():
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _, _ in _imports(path):
            while target not in MODULES and "." in target:  # `from pkg.mod import name` → pkg.mod
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != module:
                graph[module].add(target)
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " → ".join([*stack[stack.index(t):], t]))
            if t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_first_party_imports_are_at_the_top_outside_the_cli():
    inner = [f"{path.relative_to(ROOT)}:{line}: {target}"
             for module, path in MODULES.items() if module != "recon.cli"
             for target, line, at_top in _imports(path) if not at_top]
    assert not inner, "first-party imports inside functions:\n" + "\n".join(inner)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_all_lists_the_public_names_and_they_resolve(module):
    mod = importlib.import_module(module)
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    if not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.ImportFrom)) for n in tree.body):
        return  # a package's __init__ with a docstring only
    assert hasattr(mod, "__all__"), f"{module} has no __all__"
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it does not define"
    public = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
              and not n.name.startswith("_")}
    if module == "recon.cli":  # typer commands are the CLI's, not a Python API
        public &= {"app", "main"}
    missing = public - set(mod.__all__)
    assert not missing, f"{module} defines {sorted(missing)} but __all__ leaves them out"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_short_or_say_why(module):
    text = MODULES[module].read_text(encoding="utf-8")
    lines = text.count("\n")
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert lines <= 600 or "Why this module is long" in doc, f"{module} has {lines} lines"
