"""The real Vercel CLI's dev server in one command: `vercel dev --local`, offline, with the same
stand-ins as ./scripts/dev.

    python -m lib.devtools.vercel_dev        (what ./scripts/vercel-dev runs; PORT, default 3000)

Why each step:
- `vercel dev` gives a function only the variables of `.env` and of the config's `env`, not its
  own environment; and it runs each function from its own copy of the project
  (`.vercel/cache/<function>/`), so a relative DATA_DIR is a different folder per function
  (`GET /api/session` then reports a running sandbox as `missing`, `DELETE` leaves it behind).
  So this writes a temporary local config, vercel.dev.json plus `env`: every variable the
  service reads that is set here (found by letting `Settings.from_env` read a recording
  mapping), the stand-ins' URLs, and absolute DATA_DIR (default `.data`) and
  LOCAL_SANDBOX_PYTHON (default .venv's Python, which has claude-agent-sdk; the function's own
  Python has only requirements.txt). A `.env` still overrides them (vercel dev applies it last).
- The stand-ins (Upstash, and the offline model without ANTHROPIC_API_KEY) are started by
  `start_stand_ins`, as in ./scripts/dev, and live in this process: they end with it.
- `vercel dev` runs in its own process group, with its functions' Python processes; on exit
  (Ctrl-C, SIGTERM, or vercel dev ending) the group is stopped, and so are the warm agents
  (they run detached, in their own sessions) of the running local sandboxes under DATA_DIR.
  If this process is killed outright, the kernel sends vercel dev SIGTERM (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lib.devtools.dev_server import start_stand_ins, stop_local_sandboxes
from lib.devtools.vercel_cli import ROOT, cli_env, vercel_cli

FIRST_REQUEST_NOTE = ("the first request to each function takes ~9 s (vercel dev installs its "
                      "requirements into a copy of the project), later ones are fast")


def read_dotenv(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines of a .env (comments, `export ` and quotes handled; no expansion, as in
    vercel dev)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


class _Recording(Mapping[str, str]):
    """A mapping that remembers every name looked up in it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env, self.read = env, set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self.env[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def function_env(env: Mapping[str, str], root: Path = ROOT) -> dict[str, str]:
    """What the functions must see: the service's variables that `env` sets, with DATA_DIR and
    LOCAL_SANDBOX_PYTHON absolute. Raises ConfigError (naming the variable) for a bad config."""
    from lib.config import Settings

    env = dict(env)
    env["DATA_DIR"] = str((root / (env.get("DATA_DIR") or ".data")).absolute())
    env.setdefault("LOCAL_SANDBOX_PYTHON", str(root / ".venv" / "bin" / "python"))
    recording = _Recording(env)
    Settings.from_env(recording)
    return {name: env[name] for name in sorted(recording.read) if name in env}


def local_config(env: Mapping[str, str], root: Path = ROOT) -> dict[str, Any]:
    config = json.loads((root / "vercel.dev.json").read_text())
    config["env"] = dict(env)
    return config


_LIBC = ctypes.CDLL(None)  # loaded here: the child of a fork should only make the call


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux)."""
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is not None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM to the process group (vercel dev and its functions), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        try:  # vercel dev has exited; its functions may not have yet
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def main() -> int:
    from lib.config import Settings
    from lib.errors import ServiceError

    dotenv = read_dotenv(ROOT / ".env")
    if dotenv.get("DATA_DIR") and not Path(dotenv["DATA_DIR"]).is_absolute():
        print("vercel-dev: warning: .env sets a relative DATA_DIR, which is a different folder "
              "for each function under vercel dev; make it absolute", flush=True)
    env = {**os.environ, **dotenv}  # what decides which stand-ins are needed
    for line in start_stand_ins(env):
        print(f"vercel-dev: {line}", flush=True)
    try:
        variables = function_env(env)
    except ServiceError as error:
        print(f"vercel-dev: {error.message}", flush=True)
        return 2
    try:
        cli = vercel_cli()
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"vercel-dev: could not install the Vercel CLI with npm: {error}", flush=True)
        return 2
    port = int(os.environ.get("PORT") or 3000)
    settings = Settings.from_env(variables)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the `finally` below on TERM
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    with tempfile.TemporaryDirectory(prefix="vercel-dev-") as tmp:
        config = Path(tmp) / "vercel.dev.local.json"  # may hold a key: not in the repository
        config.write_text(json.dumps(local_config(variables)))
        config.chmod(0o600)
        print(f"vercel-dev: vercel dev on http://127.0.0.1:{port} (AUTH_MODE={settings.auth_mode}"
              f", DATA_DIR={settings.data_dir}); {FIRST_REQUEST_NOTE}", flush=True)
        process = subprocess.Popen(
            [str(cli), "dev", "--local", "--local-config", str(config), "--listen",
             f"127.0.0.1:{port}", "--yes"],
            cwd=ROOT, env=cli_env(), start_new_session=True, preexec_fn=_die_with_parent)
        try:
            return process.wait()
        except KeyboardInterrupt:
            return 130
        finally:
            stop_group(process)
            stop_local_sandboxes(settings)
            print("vercel-dev: stopped vercel dev, its functions and their warm agents", flush=True)


if __name__ == "__main__":
    sys.exit(main())
