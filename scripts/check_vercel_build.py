"""Build the deployment offline with the pinned Vercel CLI and check what would be deployed.

    ./scripts/check-vercel-build

What is built: a copy of the working tree as it is now, tracked files and untracked ones git does
not ignore (`git ls-files --cached --others --exclude-standard`), in a temporary folder. A copy,
not the tree itself, because `vercel build` writes pyproject.toml, uv.lock and .vercel/ where it
runs, and because the check plants a `.env` (and a nested `lib/.env.local`) holding a random
canary: in the real tree that could overwrite a user's own `.env`; the user's `.env` is ignored
by git, so it is never copied. The copy gets a placeholder .vercel/project.json, without which
`vercel build` hangs offline at "Loading teams".

What is checked, after a first build:
- every api/ file became a function with maxDuration 300 and streaming, the crons are in
  config.json, each function is under the budget;
- a function ships only api/ and lib/ (not lib/devtools/, lib/cli.py) besides its dependencies;
- the canary is nowhere in .vercel/output or in any file a function's filePathMap points to;
- only public/ is served as static files.
Then a package is added to requirements.txt and the same folder is built again (through
`lib.devtools.vercel_cli.build`, as ./scripts/vercel-build does): the second build must ship it,
so repeated builds follow requirements.txt and not the uv.lock the first one left.
Prints each function's size and the total (every distinct file a deployment would upload).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.devtools.vercel_cli import build  # noqa: E402

BUDGET_MB = 60
SHIPPED = ("api/", "lib/")
NEVER_SHIPPED = ("lib/devtools/", "lib/cli.py")
CANARY_FILES = (".env", "lib/.env.local")
ADDED_PACKAGE, ADDED_FILE = "six==1.17.0", "_vendor/six.py"  # small, and needed by nothing else


def working_tree_copy(target: Path) -> None:
    """Tracked and untracked, not ignored files of the working tree (regular files only)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".vercel").mkdir()
    (target / ".vercel" / "project.json").write_text(json.dumps(
        {"projectId": "prj_check", "orgId": "team_check", "settings": {"framework": None}}))


def plant_canary(work: Path) -> str:
    canary = f"canary-{secrets.token_hex(12)}"
    for name in CANARY_FILES:
        (work / name).write_text(f"ANTHROPIC_API_KEY={canary}\nAUTH_JWT_SECRET={canary}\n")
    return canary


def function_files(work: Path) -> dict[str, dict[str, Path]]:
    """Each function's files: bundle path -> file on disk (filePathMap and the .func folder)."""
    functions_dir = work / ".vercel" / "output" / "functions"
    found = {}
    for func in sorted(functions_dir.rglob("*.func")):
        vc = json.loads((func / ".vc-config.json").read_text())
        files = {key: work / source for key, source in vc.get("filePathMap", {}).items()}
        files |= {str(p.relative_to(func)): p for p in func.rglob("*") if p.is_file()}
        found[str(func.relative_to(functions_dir))] = files
    return found


def sizes(work: Path) -> tuple[dict[str, tuple[int, int]], int]:
    """(files, bytes) per function, and the bytes of all distinct files of the deployment."""
    per_function, everything = {}, {}
    for name, files in function_files(work).items():
        present = {key: path for key, path in files.items() if path.is_file()}
        per_function[name] = (len(present), sum(p.stat().st_size for p in present.values()))
        everything |= {p.resolve(): p.stat().st_size for p in present.values()}
    output = work / ".vercel" / "output"
    everything |= {p.resolve(): p.stat().st_size for p in output.rglob("*") if p.is_file()}
    return per_function, sum(everything.values())


def leaks(work: Path, canary: str) -> list[str]:
    """Where the canary is: any file in .vercel/output or that a function points to."""
    needle = canary.encode()
    paths = {p for p in (work / ".vercel" / "output").rglob("*") if p.is_file()}
    for files in function_files(work).values():
        paths |= {p for p in files.values() if p.is_file()}
    return sorted(str(p.relative_to(work)) for p in paths if needle in p.read_bytes())


def run_build(work: Path) -> bool:
    result = build(work)
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:])
        print("FAIL: vercel build failed")
    return result.returncode == 0


def check(work: Path) -> list[str]:
    output = work / ".vercel" / "output"
    problems = []
    expected = sorted(str(p.relative_to(work).with_suffix("")) for p in (work / "api").rglob("*.py")
                      if not any(part.startswith("_") for part in p.relative_to(work).parts))
    functions = function_files(work)
    built = sorted(name.removesuffix(".func") for name in functions)
    if built != expected:
        problems.append(f"functions {built} != api files {expected}")
    config = json.loads((output / "config.json").read_text())
    vercel_json = json.loads((work / "vercel.json").read_text())
    if config.get("crons") != vercel_json["crons"]:
        problems.append(f"crons in config.json: {config.get('crons')}")
    per_function, total = sizes(work)
    print(f"{'function':<28} {'files':>6} {'MB':>6}")
    for name, files in functions.items():
        count, size = per_function[name]
        print(f"{name:<28} {count:>6} {size / 1e6:>6.1f}")
        if size / 1e6 > BUDGET_MB:
            problems.append(f"{name} is {size / 1e6:.1f} MB, over the {BUDGET_MB} MB budget")
        vc = json.loads((output / "functions" / name / ".vc-config.json").read_text())
        if vc.get("maxDuration") != 300 or not vc.get("supportsResponseStreaming"):
            problems.append(f"{name}: maxDuration {vc.get('maxDuration')}, streaming "
                            f"{vc.get('supportsResponseStreaming')}")
        own = [key for key in vc.get("filePathMap", {}) if not key.startswith("_vendor/")]
        extra = [key for key in own if not key.startswith(SHIPPED) or key.startswith(NEVER_SHIPPED)
                 or Path(key).name.startswith(".env")]
        if extra:
            problems.append(f"{name} deploys {extra[:8]}")
        if not any(k.startswith("_vendor/flask/") for k in files):
            problems.append(f"{name} has no dependencies (requirements.txt not installed?)")
    print(f"total: {total / 1e6:.1f} MB in distinct files")
    static = sorted(str(p.relative_to(output / "static")) for p in (output / "static").rglob("*")
                    if p.is_file())
    print(f"static files: {static}")
    public = sorted(str(p.relative_to(work / "public")) for p in (work / "public").rglob("*")
                    if p.is_file())
    if static != public:
        problems.append(f"static output {static} is not exactly public/ {public}")
    return problems


def check_canary(work: Path, canary: str) -> list[str]:
    found = leaks(work, canary)
    print(f"canary from {', '.join(CANARY_FILES)}: " + (f"FOUND in {found[:8]}" if found else
                                                      "not in the build"))
    return [f"the planted .env reached the build: {found[:8]}"] if found else []


def check_second_build(work: Path) -> list[str]:
    missing = [name for name, files in function_files(work).items() if ADDED_FILE not in files]
    print(f"second build after adding {ADDED_PACKAGE} to requirements.txt: " +
          (f"NOT shipped by {missing}" if missing else "shipped by every function"))
    return [f"the second build ignored requirements.txt ({ADDED_PACKAGE} missing in "
            f"{missing})"] if missing else []


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="vercel-build-") as tmp:
        work = Path(tmp)
        working_tree_copy(work)
        canary = plant_canary(work)
        if not run_build(work):
            return 1
        problems = check(work) + check_canary(work, canary)
        with (work / "requirements.txt").open("a") as requirements:
            requirements.write(f"\n{ADDED_PACKAGE}\n")
        if not run_build(work):
            return 1
        problems += check_second_build(work) + check_canary(work, canary)
        left = [name for name in ("pyproject.toml", "uv.lock") if (work / name).exists()]
        if left:
            problems.append(f"the build left {left} behind")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("vercel build check:", "FAILED" if problems else "passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
