"""Dependencies flow one way: model/ (artifacts, formats, runtimes, training) never imports jobs/;
the job (jobs/) never imports its development tools (jobs/benchmark/, jobs/sample_data.py).

Every import is found by parsing the source (ast), at module level and inside functions alike.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEV_TOOLS = ("jobs.benchmark", "jobs.sample_data")
# The dev tools themselves, until they move out of jobs/.
DEV_TOOL_PATHS = ("jobs/benchmark/", "jobs/sample_data.py")


def imports(source: str, filename: str = "<source>") -> Iterator[tuple[int, list[str]]]:
    """(line, the dotted names it may import) of every absolute import statement in the source.

    `from a import b` may import a or its submodule a.b; importlib.import_module and __import__
    with a literal name count too. Relative imports stay inside their package.
    """
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, [alias.name]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, [node.args[0].value]


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    """'file:line imports module' for every import of a forbidden package (or a module in it)."""
    found = []
    for path in paths:
        for line, names in sorted(imports(path.read_text(encoding="utf-8"), str(path))):
            hits = [name for name in names if any(is_under(name, package) for package in forbidden)]
            if hits:
                found.append(f"{path.relative_to(REPO)}:{line} imports {hits[0]}")
    return found


def python_files(folder: str) -> list[Path]:
    paths = sorted((REPO / folder).rglob("*.py"))
    assert paths, f"no Python files under {folder}/"
    return paths


def test_model_never_imports_jobs():
    found = violations(python_files("model"), ("jobs",))
    assert not found, "model/ must not import jobs/ (pass what it needs in instead):\n" + "\n".join(found)


def test_the_job_never_imports_its_dev_tools():
    paths = [p for p in python_files("jobs") if not str(p.relative_to(REPO)).startswith(DEV_TOOL_PATHS)]
    found = violations(paths, DEV_TOOLS)
    assert not found, "jobs/ must not import the benchmark or the sample data:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("import jobs.fetch", 1),
        ("from jobs.infer import build_model_runner", 1),
        ("from jobs import decode", 1),
        ("def f():\n    from jobs.decode import prepare\n    return prepare", 2),
        ("import importlib\nimportlib.import_module('jobs.fetch')", 2),
    ],
)
def test_every_form_of_import_is_seen(source, line, tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "m.py").write_text(source)
    found = violations([tmp_path / "m.py"], ("jobs",))
    assert found and all(v.startswith(f"m.py:{line} imports jobs") for v in found), found


def test_lookalikes_and_relative_imports_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "m.py").write_text("import jobsite\nfrom .jobs import x\nfrom model import jobs_like\n")
    assert violations([tmp_path / "m.py"], ("jobs",)) == []


def test_a_dev_tool_imported_from_its_package_is_seen(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "m.py").write_text("from jobs import decode\nfrom jobs import benchmark, fetch\n")
    assert violations([tmp_path / "m.py"], DEV_TOOLS) == ["m.py:2 imports jobs.benchmark"]
