"""The deployment builds with the pinned Vercel CLI, offline, and deploys only what it should."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_the_dev_config_is_vercel_json_without_max_duration():
    deployed = json.loads((ROOT / "vercel.json").read_text())
    for function in deployed["functions"].values():
        function.pop("maxDuration")
    assert json.loads((ROOT / "vercel.dev.json").read_text()) == deployed


@pytest.mark.slow
@pytest.mark.vercel_build
def test_vercel_build_produces_the_expected_deployment():
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: the vercel build check is skipped")
    result = subprocess.run([sys.executable, "scripts/check_vercel_build.py"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vercel build check: passed" in result.stdout
