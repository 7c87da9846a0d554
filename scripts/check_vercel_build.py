"""Build the deployment offline with the pinned Vercel CLI and check what would be deployed.

    ./scripts/check-vercel-build

Installs vercel@58.10.0 from npm (once, into .cache/), builds a copy of the tracked files with
`vercel build` (Python 3.12 and uv from .venv; a hand-written .vercel/project.json, no login)
and asserts: every api/ file became a function, the crons are in config.json, each function's
bundle is under the budget, and no test, dev tool or secret file is deployed. Prints the sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERCEL_VERSION = "58.10.0"
BUDGET_MB = 60
FORBIDDEN = ("tests/", "lib/devtools/", "lib/cli.py", "bench/", "scripts/", ".env", ".data/",
             ".venv/")


def vercel_cli() -> Path:
    prefix = ROOT / ".cache" / f"vercel-{VERCEL_VERSION}"
    binary = prefix / "node_modules" / ".bin" / "vercel"
    if not binary.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                        "--loglevel=error", "-E", f"vercel@{VERCEL_VERSION}"], check=True)
    return binary


def tracked_copy(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".vercel").mkdir()
    (target / ".vercel" / "project.json").write_text(json.dumps(
        {"projectId": "prj_check", "orgId": "team_check", "settings": {"framework": None}}))


def main() -> int:
    cli = vercel_cli()
    with tempfile.TemporaryDirectory(prefix="vercel-build-") as tmp:
        work = Path(tmp)
        tracked_copy(work)
        env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
               "VERCEL_TELEMETRY_DISABLED": "1", "NO_UPDATE_NOTIFIER": "1"}
        build = subprocess.run([str(cli), "build", "--yes"], cwd=work, env=env,
                               capture_output=True, text=True)
        if build.returncode != 0:
            print(build.stdout[-3000:], build.stderr[-3000:])
            print("FAIL: vercel build failed")
            return 1
        return check(work)


def check(work: Path) -> int:
    output = work / ".vercel" / "output"
    problems = []
    expected = sorted(str(p.relative_to(work).with_suffix("")) for p in (work / "api").rglob("*.py")
                      if not any(part.startswith("_") for part in p.relative_to(work).parts))
    built = sorted(str(p.relative_to(output / "functions").with_suffix(""))
                   for p in (output / "functions").rglob("*.func"))
    if built != expected:
        problems.append(f"functions {built} != api files {expected}")
    config = json.loads((output / "config.json").read_text())
    vercel_json = json.loads((work / "vercel.json").read_text())
    if config.get("crons") != vercel_json["crons"]:
        problems.append(f"crons in config.json: {config.get('crons')}")
    print(f"{'function':<28} {'files':>6} {'MB':>6}")
    for func in sorted((output / "functions").rglob("*.func")):
        vc = json.loads((func / ".vc-config.json").read_text())
        files = vc.get("filePathMap", {})
        size = sum((work / source).stat().st_size for source in files.values()
                   if (work / source).is_file())
        size += sum(p.stat().st_size for p in func.rglob("*") if p.is_file())
        name = str(func.relative_to(output / "functions"))
        print(f"{name:<28} {len(files):>6} {size / 1e6:>6.1f}")
        if size / 1e6 > BUDGET_MB:
            problems.append(f"{name} is {size / 1e6:.1f} MB, over the {BUDGET_MB} MB budget")
        if vc.get("maxDuration") != 300 or not vc.get("supportsResponseStreaming"):
            problems.append(f"{name}: maxDuration {vc.get('maxDuration')}, streaming "
                            f"{vc.get('supportsResponseStreaming')}")
        leaked = [k for k in files if k.startswith(FORBIDDEN)]
        if leaked:
            problems.append(f"{name} deploys {leaked[:5]}")
        if not any(k.startswith("_vendor/flask/") for k in files):
            problems.append(f"{name} has no dependencies (requirements.txt not installed?)")
    static = sorted(str(p.relative_to(output / "static")) for p in (output / "static").rglob("*")
                    if p.is_file())
    print(f"static files: {static}")
    public = sorted(str(p.relative_to(work / "public")) for p in (work / "public").rglob("*")
                    if p.is_file())
    if static != public:
        problems.append(f"static output {static} is not exactly public/ {public}")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("vercel build check:", "FAILED" if problems else "passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
