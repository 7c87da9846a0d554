"""The deployment builds with the pinned Vercel CLI, offline, and deploys only what it should."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.devtools.vercel_cli import build, cli_prefix, remove_generated_manifest
from tests.conftest import ROOT


def test_the_dev_config_is_vercel_json_without_max_duration():
    deployed = json.loads((ROOT / "vercel.json").read_text())
    for function in deployed["functions"].values():
        function.pop("maxDuration")
    assert json.loads((ROOT / "vercel.dev.json").read_text()) == deployed


@pytest.fixture(scope="module")
def build_check() -> str:
    """One run of ./scripts/check-vercel-build (two builds of a working-tree copy) for the
    tests below; the repository must look the same afterwards."""
    if shutil.which("npm") is None and not cli_prefix().exists():
        pytest.skip("npm is not installed: the vercel build check is skipped")
    before = set(ROOT.iterdir())
    result = subprocess.run([sys.executable, "scripts/check_vercel_build.py"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    print(result.stdout, result.stderr)
    assert set(ROOT.iterdir()) == before, "the check left files in the repository"
    return result.stdout


@pytest.mark.slow
@pytest.mark.vercel_build
def test_vercel_build_produces_the_expected_deployment(build_check: str) -> None:
    assert "vercel build check: passed" in build_check, build_check


@pytest.mark.slow
@pytest.mark.vercel_build
def test_a_dot_env_in_the_working_tree_is_not_deployed(build_check: str) -> None:
    """A canary planted in .env and lib/.env.local is in no file of either build."""
    assert build_check.count("canary from .env, lib/.env.local: not in the build") == 2, build_check


@pytest.mark.slow
@pytest.mark.vercel_build
def test_repeated_builds_follow_requirements_txt(build_check: str) -> None:
    """The second build in the same folder ships a package added to requirements.txt."""
    assert "to requirements.txt: shipped by every function" in build_check, build_check


def test_only_the_manifest_vercel_build_wrote_is_removed(tmp_path: Path) -> None:
    generated = ('[project]\nname = "app"\nversion = "0.1.0"\ndependencies = [ "flask==3.1.3" ]\n'
                 'requires-python = "~=3.12.0"\n')
    (tmp_path / "pyproject.toml").write_text(generated)
    (tmp_path / "uv.lock").write_text("version = 1\n")
    assert remove_generated_manifest(tmp_path) == ["pyproject.toml", "uv.lock"]
    assert list(tmp_path.iterdir()) == []
    own = '[project]\nname = "agents"\n\n[tool.ruff]\nline-length = 110\n'
    for text in (own, generated + "[tool.uv]\n", "not toml ["):
        (tmp_path / "pyproject.toml").write_text(text)
        (tmp_path / "uv.lock").write_text("version = 1\n")
        assert remove_generated_manifest(tmp_path) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml", "uv.lock"]


def test_building_without_a_linked_project_says_what_to_do(tmp_path: Path) -> None:
    """Offline, `vercel build` without .vercel/project.json hangs at "Loading teams"."""
    with pytest.raises(RuntimeError, match="vercel link"):
        build(tmp_path)
