"""The layer rules of DESIGN.md that the job machinery and the CLI must keep: imports between the
packages only go one way (no cycle), and no SQL construct outside storage/ in jobs/ or launch.py."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGES = ("app", "services", "jobs", "slrnet", "storage")
# what each package may import (DESIGN.md: launch -> app -> services -> slrnet + storage; jobs between)
ALLOWED = {
    "app": {"services", "jobs", "storage", "slrnet"},
    "jobs": {"services", "storage", "slrnet"},
    "services": {"storage", "slrnet"},
    "storage": set(),
    "slrnet": set(),
}
# single modules a package may import beyond ALLOWED: storage keeps label maps in slrnet's
# convention (slrnet.config.IGNORE_INDEX; a torch-free module of values)
ALLOWED_MODULES = {"storage": {"slrnet.config"}}
SQL_NAMES = {"select", "update", "insert", "delete", "exists", "func", "text"}


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def _top_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module.split(".")[0]] if node.module and node.level == 0 else []
    return [alias.name.split(".")[0] for alias in node.names]


def test_packages_import_only_downwards() -> None:
    wrong = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in _imports(path):
                if isinstance(node, ast.ImportFrom) and node.module in ALLOWED_MODULES.get(package, ()):
                    continue
                for top in _top_modules(node):
                    if top in PACKAGES and top != package and top not in ALLOWED[package]:
                        wrong.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {top}")
    assert wrong == []


def test_no_sql_constructs_in_the_job_machinery_or_the_cli() -> None:
    found = []
    for path in [*sorted((REPO_ROOT / "jobs").glob("*.py")), REPO_ROOT / "launch.py"]:
        for node in _imports(path):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                names = {alias.name for alias in node.names} & SQL_NAMES
                if names:
                    found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {sorted(names)}")
    assert found == []
