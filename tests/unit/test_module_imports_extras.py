"""Every third-party module that gateway/ and hil/ import at module level is installed by ``pip install
civicedge`` or, when an extra installs it, is one :data:`hil.cli.extras.EXTRA_OF_MODULE` names with an
extra that really installs it: otherwise a gateway-only install fails with a traceback instead of
naming the extra (websockets reached the harness only through Bumble).

Read from the source (module level: not inside a function, not under ``if TYPE_CHECKING``) and from the
installed metadata (tests/install_closure.py).
"""

from __future__ import annotations

import ast
import sys
import tomllib

from packaging.requirements import Requirement

from hil.cli.extras import EXTRA_OF_MODULE
from install_closure import ROOT, closure, dist_name, distributions_of

# MicroPython files (the simulator's machine/bluetooth modules) and npm's tree: not host Python.
SKIP = ("hil/sim/mpy/", "hil/sim/node_modules/", "gateway/_bundle/")


def _module_level_imports(tree: ast.Module) -> set[str]:
    """Top-level names of the absolute imports run when the module loads."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.If):
                # only `if TYPE_CHECKING:` itself is skipped (`if not TYPE_CHECKING:` runs at load)
                if ast.unparse(node.test) not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                # an import guarded by `except ImportError` (or ModuleNotFoundError) is optional; others run
                guarded = any(h.type is not None and ("ImportError" in ast.unparse(h.type)
                                                      or "ModuleNotFoundError" in ast.unparse(h.type))
                              for h in node.handlers)
                if not guarded:
                    visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.With, ast.AsyncWith, ast.ClassDef)):
                visit(node.body)  # a class body runs when the module loads
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Match):
                for case in node.cases:
                    visit(case.body)

    visit(tree.body)
    return found


def _third_party_imports() -> dict[str, set[str]]:
    """Third-party top-level module -> the files (relative paths) that import it at module level."""
    out: dict[str, set[str]] = {}
    for package in ("gateway", "hil"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(SKIP):
                continue
            for name in _module_level_imports(ast.parse(path.read_bytes(), rel)):
                if name in sys.stdlib_module_names or name in ("gateway", "hil", "__future__"):
                    continue
                out.setdefault(name, set()).add(rel)
    return out


def test_module_level_imports_are_core_or_name_their_extra() -> None:
    core = closure()
    imports = _third_party_imports()
    assert "aiohttp" in imports and "websockets" in imports  # the scan sees the gateway's and the radio's
    problems = []
    for module, files in sorted(imports.items()):
        dists = distributions_of(module)
        if not dists:
            problems.append(f"{module} (imported by {sorted(files)[0]}) is not installed in this venv")
            continue
        if dists & core:
            continue  # `pip install civicedge` installs it
        extra = EXTRA_OF_MODULE.get(module)
        if extra is None:
            problems.append(f"{module} (imported by {sorted(files)[0]}, from {sorted(dists)}) is not a core "
                            "dependency and hil.cli.extras.EXTRA_OF_MODULE does not name its extra")
        elif not dists & closure((extra,), core=False):
            problems.append(f"{module}: EXTRA_OF_MODULE says '{extra}', which does not install {sorted(dists)}")
    assert not problems, "\n".join(problems)


def _declared(extra: str) -> set[str]:
    """Distributions ``extra`` lists itself or through the extras it names (``civicedge[field]``)."""
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    out, todo = set(), [extra]
    while todo:
        for text in optional[todo.pop()]:
            req = Requirement(text)
            if dist_name(req.name) == "civicedge":
                todo.extend(req.extras)
            else:
                out.add(dist_name(req.name))
    return out


def test_what_we_import_from_an_extra_is_declared_by_it() -> None:
    # not only brought by another of its dependencies, which a later release of that one may drop
    problems = []
    for module, files in sorted(_third_party_imports().items()):
        extra = EXTRA_OF_MODULE.get(module)
        if extra is not None and not distributions_of(module) & _declared(extra):
            problems.append(f"{module} (imported by {sorted(files)[0]}) is not declared in the '{extra}' extra")
    assert not problems, "\n".join(problems)


def test_the_scan_sees_what_runs_at_load_and_skips_what_does_not() -> None:
    """Review of 278d9fa: class bodies, loops and `if not TYPE_CHECKING:` run at load and were not read."""
    tree = ast.parse("""
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    import skipped_typing
if not TYPE_CHECKING:
    import seen_not_typing
class A:
    import seen_in_class
for _ in ():
    import seen_in_loop
try:
    import skipped_optional
except ModuleNotFoundError:
    pass
def f():
    import skipped_in_function
""")
    found = _module_level_imports(tree)
    assert {"seen_not_typing", "seen_in_class", "seen_in_loop"} <= found
    assert not {"skipped_typing", "skipped_optional", "skipped_in_function"} & found
