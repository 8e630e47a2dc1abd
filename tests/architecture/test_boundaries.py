"""The package boundaries of DESIGN.md, checked on every run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 500


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("policies", ("gateway", "local_engine")), ("local_engine", ("gateway",)), ("gateway", ("local_engine",))],
)
def test_package_does_not_import(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _sources(package)
        for name in _imports(path)
        if name.split(".")[0] in forbidden
    ]
    assert offenders == []


def test_litellm_is_imported_only_by_its_adapter() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _sources("gateway")
        if any(name.split(".")[0] == "litellm" for name in _imports(path))
        and path.relative_to(ROOT).as_posix() != "gateway/providers/litellm_adapter.py"
    ]
    assert offenders == []


def test_no_source_file_holds_more_than_one_idea_by_size() -> None:
    too_big = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for package in ("gateway", "policies", "local_engine")
        for path in _sources(package)
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert too_big == []


def test_importing_the_gateway_does_not_import_litellm() -> None:
    import subprocess
    import sys

    code = "import sys, gateway.server; print('litellm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "False"
