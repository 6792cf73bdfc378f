"""Dependencies flow one way: tools/ -> jobs/ -> model/.

- model/ (artifacts, formats, runtimes, the model build) never imports jobs/ or tools/;
- jobs/ (the job that EMR nodes install and run) never imports tools/ (the development tools: the
  benchmark, the sample data, head training, the int8 build), which live outside the package;
- tools/ may import both.

Every import is found by parsing the source (ast), at module level and inside functions alike.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEV_TOOLS = ("tools",)


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


@pytest.mark.parametrize("folder", ["jobs", "model"])
def test_the_job_and_model_never_import_the_dev_tools(folder):
    found = violations(python_files(folder), DEV_TOOLS)
    assert not found, f"{folder}/ must not import tools/ (it is not in the package EMR nodes install):\n" + "\n".join(found)


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


def test_a_dev_tool_import_in_any_form_is_seen(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "m.py").write_text(
        "from jobs import decode\nfrom tools import benchmark\nimport tools.sample_data\nfrom toolsy import x\n"
    )
    assert violations([tmp_path / "m.py"], DEV_TOOLS) == ["m.py:2 imports tools", "m.py:3 imports tools.sample_data"]
