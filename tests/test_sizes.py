"""Sizes a newcomer can read: no module of the package over ``MAX_MODULE_LINES`` lines, and at
most ``MAX_LONG_FUNCTIONS`` functions over ``MAX_FUNCTION_LINES`` lines.

Every ``.py`` file under ``analysis/`` counts (subpackages included), and every function
(methods and nested functions too), from its ``def`` line to its last line, docstring and
comments included; nothing is left out.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from tests.conftest import ROOT

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
MAX_LONG_FUNCTIONS = 3


def module_lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def function_lengths(source: str) -> dict[str, int]:
    """Lines of every function in ``source`` (``def`` to last line), by qualified name."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def package_files() -> list[Path]:
    return sorted((ROOT / "analysis").rglob("*.py"))


def test_the_counter_counts_every_function_methods_and_nested_ones_included():
    source = textwrap.dedent(
        '''
        def short():
            return 1

        class Machine:
            def method(self):
                """Two lines of body."""
                def inner():
                    pass
                return inner

        if True:
            async def hidden():
                pass
        '''
    )
    assert function_lengths(source) == {
        "short": 2,
        "Machine.method": 5,
        "Machine.method.inner": 2,
        "hidden": 2,
    }


def test_the_package_is_counted_whole():
    files = {p.relative_to(ROOT).as_posix() for p in package_files()}
    assert {"analysis/__main__.py", "analysis/figures/__init__.py"} <= files
    assert any(f.startswith("analysis/strategies/") for f in files)


def test_no_module_is_over_600_lines():
    over = {
        p.relative_to(ROOT).as_posix(): n
        for p in package_files()
        if (n := module_lines(p)) > MAX_MODULE_LINES
    }
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}"


def test_at_most_three_functions_are_over_60_lines():
    long = {
        f"{p.relative_to(ROOT).as_posix()}: {name}": n
        for p in package_files()
        for name, n in function_lengths(p.read_text()).items()
        if n > MAX_FUNCTION_LINES
    }
    assert len(long) <= MAX_LONG_FUNCTIONS, (
        f"{len(long)} functions over {MAX_FUNCTION_LINES} lines (at most {MAX_LONG_FUNCTIONS}): "
        f"{dict(sorted(long.items(), key=lambda kv: -kv[1]))}"
    )
