"""The code package that EMR nodes install holds what the job runs, and no development tools.

Builds the real tarball from this repository with infra/scripts/package.py (what
`make deploy-cluster` uploads and the bootstrap action unpacks) and lists its members.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from infra.scripts import package
from tests.test_layering import imports

REPO = Path(__file__).resolve().parent.parent
ENTRY_POINT = "jobs/tag_images.py"
PACKAGED_TOPS = ("jobs", "model")
# Words that name a development tool (tools/: benchmark, sample data, head training, datasets).
DEV_TOOL_WORDS = ("benchmark", "sample_data", "train_head", "head_training", "datasets")


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    tarball = package.build(REPO, tmp_path_factory.mktemp("package") / "code.tar.gz")
    with tarfile.open(tarball) as tar:
        return set(tar.getnames())


def module_file(name: str) -> str | None:
    """The repository-relative file of a dotted module name under jobs/ or model/, if there is one."""
    parts = name.split(".")
    if parts[0] not in PACKAGED_TOPS:
        return None
    for rel in (Path(*parts).with_suffix(".py"), Path(*parts, "__init__.py")):
        if (REPO / rel).is_file():
            return rel.as_posix()
    return None  # `from jobs.x import some_function`: the name is not a module


def job_closure(entry: str) -> tuple[set[str], list[str]]:
    """(every jobs/ or model/ file the entry point imports, transitively, with the packages' __init__.py;
    every tools/ import met on the way, as 'file:line module').

    Imports inside functions count (ast.walk sees them): the UDF's imports run on the executors.
    """
    seen: set[str] = set()
    tools_imports: list[str] = []
    todo = [entry]
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        for line, names in imports((REPO / rel).read_text(encoding="utf-8"), rel):
            for name in names:
                if name == "tools" or name.startswith("tools."):
                    tools_imports.append(f"{rel}:{line} {name}")
                parts = name.split(".")
                # the module and every package above it (importing a.b.c runs a/__init__.py and a/b/__init__.py)
                for depth in range(1, len(parts) + 1):
                    found = module_file(".".join(parts[:depth]))
                    if found and found not in seen:
                        todo.append(found)
    return seen, tools_imports


def test_no_development_tools_in_the_package(members):
    assert not [m for m in members if m.startswith("tools/")], "tools/ must not be packaged"
    leaked = sorted(m for m in members if any(word in m for word in DEV_TOOL_WORDS))
    assert not leaked, f"development tools in the code package: {leaked}"


def test_the_package_holds_the_job_and_its_model_code(members):
    assert {ENTRY_POINT, "model/artifact.py", "model/runtime.py", "setup.py", "requirements.txt"} <= members
    assert not [m for m in members if m.startswith("model/artifacts/")], "the models ship to S3 separately"


def test_every_module_the_job_imports_is_in_the_package(members):
    closure, tools_imports = job_closure(ENTRY_POINT)
    # the walk reaches the stages the UDF imports inside functions, and the model runtime
    assert {"jobs/__init__.py", "jobs/cli.py", "jobs/pipeline.py", "jobs/tagging.py", "model/runtime.py"} <= closure
    assert not tools_imports, f"the job imports development tools: {tools_imports}"
    missing = sorted(closure - members)
    assert not missing, f"modules the job imports but the package lacks: {missing}"


def test_the_import_walk_follows_function_level_and_package_imports(tmp_path, monkeypatch):
    for rel, text in {
        "jobs/__init__.py": "",
        "jobs/entry.py": "from jobs.a import f\n",
        "jobs/a.py": "def f():\n    from model.sub import g\n    import tools.bench\n",
        "model/__init__.py": "",
        "model/sub/__init__.py": "",
        "model/sub/g.py": "",
        "tools/bench.py": "",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    closure, tools_imports = job_closure("jobs/entry.py")
    assert closure == {
        "jobs/__init__.py", "jobs/entry.py", "jobs/a.py", "model/__init__.py", "model/sub/__init__.py", "model/sub/g.py",
    }  # fmt: skip
    assert tools_imports == ["jobs/a.py:3 tools.bench"]
