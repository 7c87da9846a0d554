"""The pinned Vercel CLI and the environment it needs here: one place for ./scripts/vercel-dev
and ./scripts/check-vercel-build, so both run the same CLI the same way.

- The CLI is installed with npm into `.cache/vercel-<version>/` inside the repository (newer
  versions fail to install here; a shared /tmp path could be another checkout's).
- Vercel's Python runtime runs the first `python3` on PATH, which must be 3.12 (the deployed
  version, .python-version), and needs `uv`: both are linked into `.cache/vercel-bin/`, which
  goes first on PATH.
- Telemetry and the update check are off: they would call out, and this runs offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERCEL_VERSION = "58.10.0"
PYTHON_VERSION = (3, 12)


def cli_prefix(root: Path = ROOT) -> Path:
    return root / ".cache" / f"vercel-{VERCEL_VERSION}"


def vercel_cli(root: Path = ROOT) -> Path:
    """The pinned CLI's binary, installed from npm on first use (CalledProcessError or
    FileNotFoundError when npm cannot: the caller says what that means)."""
    prefix = cli_prefix(root)
    binary = prefix / "node_modules" / ".bin" / "vercel"
    if not binary.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                        "--loglevel=error", "-E", f"vercel@{VERCEL_VERSION}"], check=True)
    return binary


def _python_version(python: str) -> tuple[tuple[int, int], str] | None:
    """The interpreter's (major, minor) and real path (pyenv shims resolve to their target)."""
    try:
        out = subprocess.run([python, "-c", "import sys; print(sys.version_info[0], "
                              "sys.version_info[1], sys.executable)"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    major, minor, executable = out.split(maxsplit=2)
    return (int(major), int(minor)), executable.strip()


def python312(root: Path = ROOT) -> str:
    """A Python 3.12 that is not .venv's: .venv's base interpreter when it is 3.12, else
    python3.12 on PATH. The function must see only its bundled requirements, as on Vercel."""
    candidates = []
    if sys.version_info[:2] == PYTHON_VERSION and getattr(sys, "_base_executable", None):
        candidates.append(sys._base_executable)
    candidates += [c for c in ("python3.12", "python3") if shutil.which(c)]
    for candidate in candidates:
        found = _python_version(candidate)
        if found and found[0] == PYTHON_VERSION:
            return found[1]
    raise RuntimeError("Vercel's Python runtime needs Python 3.12 (python3.12 on PATH)")


def tool_dir(root: Path = ROOT) -> Path:
    """`.cache/vercel-bin/` with `python3` (3.12) and `uv` (.venv's), for the CLI's PATH."""
    folder = root / ".cache" / "vercel-bin"
    folder.mkdir(parents=True, exist_ok=True)
    uv = root / ".venv" / "bin" / "uv"
    python = python312(root)
    for name, target in (("python3", python), ("python3.12", python), ("uv", str(uv))):
        link = folder / name
        if not (link.is_symlink() and os.readlink(link) == target):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    return folder


def cli_env(base: dict[str, str] | None = None, root: Path = ROOT) -> dict[str, str]:
    """`base` (default: this process's environment) ready for the CLI."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{tool_dir(root)}{os.pathsep}{env.get('PATH', '')}"
    env["VERCEL_TELEMETRY_DISABLED"] = "1"
    env["NO_UPDATE_NOTIFIER"] = "1"
    return env


PROJECT_JSON_HELP = (
    "`vercel build` needs .vercel/project.json: without it the CLI asks Vercel for your teams "
    "and, offline, hangs at \"Loading teams\". Run `vercel link` once (online), or, for an "
    "offline check of what would be deployed, ./scripts/check-vercel-build (it builds a copy "
    "with a placeholder project.json).")


def generated_manifest(root: Path) -> bool:
    """Whether root/pyproject.toml is the one `vercel build` wrote from requirements.txt (a
    `[project]` named "app" and nothing else), not a file of the project's own."""
    import tomllib

    try:
        data = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return set(data) == {"project"} and data["project"].get("name") == "app"


def remove_generated_manifest(root: Path) -> list[str]:
    """Delete the pyproject.toml and uv.lock a previous `vercel build` left: with them the next
    build installs from uv.lock and ignores requirements.txt. Returns what was deleted."""
    if not generated_manifest(root):
        return []
    removed = []
    for name in ("pyproject.toml", "uv.lock"):
        if (root / name).exists():
            (root / name).unlink()
            removed.append(name)
    return removed


def build(root: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`vercel build --yes` in `root` that follows requirements.txt every time: the generated
    manifest is removed before and after. Needs root/.vercel/project.json (RuntimeError with
    what to do, instead of the CLI hanging offline)."""
    if not (root / ".vercel" / "project.json").is_file():
        raise RuntimeError(PROJECT_JSON_HELP)
    cli = vercel_cli()
    remove_generated_manifest(root)
    try:
        return subprocess.run([str(cli), "build", "--yes"], cwd=root, env=cli_env(),
                              capture_output=True, text=True, timeout=timeout)
    finally:
        remove_generated_manifest(root)


def main() -> int:
    """`vercel build` of this checkout, in place (for `vercel deploy --prebuilt`)."""
    try:
        result = build(ROOT)
    except RuntimeError as error:
        print(f"vercel-build: {error}")
        return 2
    print(result.stdout + result.stderr, end="")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
