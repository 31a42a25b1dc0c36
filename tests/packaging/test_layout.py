"""Code lies where its import name says: ``pgquartz.a.b`` is ``<distribution>/src/pgquartz/a/b.py``.

No folder is renamed at install time and no import hook is needed, so editors, mypy,
import-linter and readers find every module by its name. The two distributions share one
version, written once (the runner's ``__version__``) and repeated only where a build
that reads its own folder alone needs it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import tomllib

import pytest
import yaml

from pgquartz.runner import __version__
from tests.support.images import build

ROOT = pathlib.Path(__file__).resolve().parents[2]
DISTRIBUTIONS = {"runner": "pgquartz", "operator": "pgquartz-operator"}
SOURCES = {folder: ROOT / folder / "src" for folder in DISTRIBUTIONS}
OUR_PYTHON = [
    *(path for source in SOURCES.values() for path in source.rglob("*.py")),
    *(ROOT / "tests").rglob("*.py"),
    *(ROOT / "bench").rglob("*.py"),
    *(ROOT / "images").rglob("*.py"),
    *(ROOT / "docs").rglob("*.py"),
    ROOT / "dev.py",
]


def project(folder: str) -> dict[str, object]:
    return tomllib.loads((ROOT / folder / "pyproject.toml").read_text())


def module_file(name: str) -> pathlib.Path | None:
    """The file of module or package ``name`` under one of the src folders, if there is one."""
    parts = name.split(".")
    for source in SOURCES.values():
        for candidate in (source.joinpath(*parts, "__init__.py"), source.joinpath(*parts).with_suffix(".py")):
            if candidate.is_file():
                return candidate
    return None


def pgquartz_imports(path: pathlib.Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name imported from it) of every ``pgquartz.*`` import in ``path``."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, alias.name, None) for alias in node.names if alias.name.startswith("pgquartz.")
            ]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pgquartz":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def test_every_pgquartz_import_is_a_file_under_a_src_folder() -> None:
    # (whether a name imported from a module is defined there is basedpyright's check: dev.py lint)
    imports = [(path, line, module) for path in OUR_PYTHON for line, module, _ in pgquartz_imports(path)]
    unresolved = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path, line, module in imports
        if not module_file(module)
    ]
    assert len(imports) > 300  # the scan saw the product's and the tests' imports
    assert unresolved == []


def test_each_src_folder_holds_its_own_portion_of_the_pgquartz_namespace() -> None:
    for folder, source in SOURCES.items():
        assert [child.name for child in source.iterdir() if not child.name.endswith(".egg-info")] == [
            "pgquartz"
        ]
        namespace = source / "pgquartz"
        assert not (namespace / "__init__.py").exists()  # a namespace package, shared by both
        assert sorted(child.name for child in namespace.iterdir() if child.name != "__pycache__") == [folder]
        assert (namespace / folder / "__init__.py").is_file() and (namespace / folder / "py.typed").is_file()


def test_no_distribution_renames_a_folder_or_installs_an_import_hook() -> None:
    for folder in DISTRIBUTIONS:
        setuptools = project(folder)["tool"]["setuptools"]  # type: ignore[index]
        assert "package-dir" not in setuptools
        assert setuptools["packages"]["find"] == {"where": ["src"]}
    assert "project" not in tomllib.loads((ROOT / "pyproject.toml").read_text())  # the workspace is none
    # the editable install this suite runs on: plain path entries to the two src folders
    site = pathlib.Path(importlib.metadata.distribution("pgquartz").locate_file(""))
    entries = sorted(
        line for pth in site.glob("__editable__*pgquartz*.pth") for line in pth.read_text().split()
    )
    if not entries:
        pytest.skip("pgquartz is not installed editable here (python3 dev.py setup installs it so)")
    assert entries == sorted(str(source) for source in SOURCES.values())
    assert list(site.glob("__editable__*pgquartz*finder.py")) == []


def test_both_distributions_carry_one_version() -> None:
    runner, operator = project("runner")["project"], project("operator")["project"]
    assert runner["dynamic"] == ["version"]  # type: ignore[index]
    assert project("runner")["tool"]["setuptools"]["dynamic"] == {  # type: ignore[index]
        "version": {"attr": "pgquartz.runner.__version__"}
    }
    assert operator["version"] == __version__  # type: ignore[index]
    assert f"pgquartz=={__version__}" in operator["dependencies"]  # type: ignore[index]
    assert build.version() == __version__  # the images' tags
    chart = yaml.safe_load((ROOT / "charts" / "pgquartz" / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == __version__
    for distribution in DISTRIBUTIONS.values():  # as installed here
        assert importlib.metadata.version(distribution) == __version__


def test_the_workspace_names_both_distributions() -> None:
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert workspace["tool"]["uv"]["workspace"]["members"] == list(DISTRIBUTIONS)
    for folder, name in DISTRIBUTIONS.items():
        assert project(folder)["project"]["name"] == name  # type: ignore[index]
