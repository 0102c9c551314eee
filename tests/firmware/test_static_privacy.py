"""Static guard: the privacy path uses integers only (no floats, math, random, bit_length).

Uses ``ast`` (and ``tokenize`` for numbers), so comments and strings cannot fool it.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware" / "lib" / "civic"
# the privacy package plus the code that builds released reports
CHECKED = sorted((FIRMWARE / "privacy").glob("*.py")) + [FIRMWARE / "report.py", FIRMWARE / "policy.py"]
BANNED_MODULES = {"math", "cmath", "random", "urandom", "ucmath"}


def violations(source: str) -> list[str]:
    """Return human-readable violations of the integer-only rule in ``source``."""
    found: list[str] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NUMBER:
            text = tok.string.lower().replace("_", "")
            is_int = text.startswith(("0x", "0o", "0b")) or text.isdigit()
            if not is_int:
                found.append(f"line {tok.start[0]}: float/complex literal {tok.string}")
    tree = ast.parse(source)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in BANNED_MODULES:
                    found.append(f"line {line}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in BANNED_MODULES:
                found.append(f"line {line}: from {node.module} import")
        elif isinstance(node, ast.Name) and node.id in BANNED_MODULES | {"float", "complex"}:
            found.append(f"line {line}: uses {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in {"bit_length", "from_float", "as_integer_ratio"}:
            found.append(f"line {line}: uses .{node.attr}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found.append(f"line {line}: true division '/' makes a float (use //)")
        elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Div):
            found.append(f"line {line}: '/=' makes a float")
    return found


def test_checked_files_exist() -> None:
    assert len(CHECKED) >= 5
    assert all(p.is_file() for p in CHECKED)


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.name)
def test_privacy_code_is_integer_only(path: Path) -> None:
    assert violations(path.read_text()) == []


@pytest.mark.parametrize("snippet", [
    "x = 0.5\n", "x = 1e3\n", "x = float(y)\n", "import math\n", "from math import log\n",
    "import random\n", "n = x.bit_length()\n", "y = a / b\n", "a /= 2\n", "import urandom\n", "z = 2j\n",
    "t = math.exp(1)\n",
])
def test_guard_catches(snippet: str) -> None:
    assert violations(snippet), snippet


def test_guard_ignores_comments_and_strings() -> None:
    src = '# 0.5 math.log random float(x)\ns = "1.5 import math bit_length"\nn = 0x1F + 10 // 3\n'
    assert violations(src) == []
