"""The local dev server: every `api/` function at its Vercel path, `public/` as static files,
and embedded stand-ins for whatever cloud service is not configured.

    python -m lib.devtools.dev_server        (what ./scripts/dev runs)

- No UPSTASH_REDIS_REST_URL / KV_REST_API_URL: an embedded Upstash REST server, over fakeredis,
  or over the real Redis at REDIS_URL (then state outlives a restart).
- No ANTHROPIC_API_KEY and no ANTHROPIC_BASE_URL: the offline model (not Claude), said loudly.
- AUTH_MODE defaults to `dev` here (X-User-Id header); set AUTH_MODE=jwt to test tokens.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.shared_data import SharedDataMiddleware

from lib.devtools.serving import serve_in_background

if TYPE_CHECKING:
    from lib.config import Settings

ROOT = Path(__file__).resolve().parents[2]
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def discover_functions(root: Path = ROOT) -> dict[str, WSGIApp]:
    """Vercel's rule: each api/**/*.py not starting with `_` is a function at its file path."""
    functions = {}
    for path in sorted((root / "api").rglob("*.py")):
        relative = path.relative_to(root).with_suffix("")
        if any(part.startswith("_") for part in relative.parts):
            continue
        module = importlib.import_module(".".join(relative.parts))
        functions["/" + "/".join(relative.parts)] = module.app
    return functions


def _not_found(environ: dict, start_response: Callable) -> list[bytes]:
    body = b'{"error": {"code": "not_found", "message": "no such path"}}'
    start_response("404 Not Found", [("Content-Type", "application/json"),
                                     ("Content-Length", str(len(body)))])
    return [body]


def rewrites(root: Path = ROOT) -> list[tuple[str, bool, str]]:
    """vercel.json's rewrites as (source, is a prefix, destination): a plain path, or a path
    ending in `/:name*` (the two kinds this project uses)."""
    config = json.loads((root / "vercel.json").read_text())
    found = []
    for rule in config.get("rewrites", []):
        source, prefix = rule["source"], False
        if source.rsplit("/", 1)[-1].startswith(":") and source.endswith("*"):
            source, prefix = source.rsplit("/", 1)[0] + "/", True
        if ":" in source or "(" in source:
            raise ValueError(f"the dev server cannot apply the rewrite {rule['source']!r}")
        found.append((source, prefix, rule["destination"]))
    return found


class DevServer:
    """The WSGI app: vercel.json's rewrites, then a function by its path, else a file of
    public/, else 404. The function sees the original path, as on Vercel."""

    def __init__(self, root: Path = ROOT) -> None:
        self.functions = discover_functions(root)
        self.rewrites = rewrites(root)
        self.static = SharedDataMiddleware(_not_found, {"/": str(root / "public")})

    def destination(self, path: str) -> str:
        for source, prefix, destination in self.rewrites:
            if path == source or (prefix and path.startswith(source)):
                return destination
        return path

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "/")
        # Vercel's order: the filesystem (functions here; public/ has no /api files), then
        # the rewrites.
        app = self.functions.get(path) or self.functions.get(self.destination(path))
        if app is not None:
            return app(environ, start_response)
        if path == "/":
            environ = {**environ, "PATH_INFO": "/index.html"}
        return self.static(environ, start_response)


def start_stand_ins(env: dict[str, str]) -> list[str]:
    """Start what is not configured and point `env` at it; return what was started."""
    started = []
    if not (env.get("UPSTASH_REDIS_REST_URL") or env.get("KV_REST_API_URL")):
        from lib.devtools.upstash_server import DEV_TOKEN, UpstashRestServer

        redis_url = env.get("REDIS_URL") or None
        server = serve_in_background(UpstashRestServer(redis_url, DEV_TOKEN))
        env["UPSTASH_REDIS_REST_URL"], env["UPSTASH_REDIS_REST_TOKEN"] = server.url, DEV_TOKEN
        started.append(f"Upstash REST stand-in at {server.url} over "
                       f"{'Redis at ' + redis_url if redis_url else 'fakeredis (in memory)'}")
    if not (env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_BASE_URL")):
        from lib.devtools.model_server import OfflineModel

        delay = float(env.get("OFFLINE_MODEL_DELAY") or 0.03)
        server = serve_in_background(OfflineModel(delay))
        env["ANTHROPIC_BASE_URL"] = server.url
        started.append(f"OFFLINE MODEL at {server.url}: replies are canned, not Claude "
                       "(set ANTHROPIC_API_KEY for the real model)")
    env.setdefault("AUTH_MODE", "dev")
    return started


def spawn(env: Mapping[str, str], stdout: Any = subprocess.DEVNULL,
          timeout: float = 20.0) -> tuple[subprocess.Popen, str]:
    """Start the dev server as its own process (a new function instance) on env["PORT"],
    without this process's Upstash, model and auth variables; return it once /api/health
    answers (RuntimeError, with the process killed, if it does not)."""
    import httpx

    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("UPSTASH_", "KV_", "ANTHROPIC_", "AUTH_"))}
    process = subprocess.Popen([sys.executable, "-m", "lib.devtools.dev_server"], cwd=ROOT,
                               env={**inherited, **env}, stdout=stdout, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['PORT']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the dev server did not start")


def main() -> None:
    for line in start_stand_ins(os.environ):  # type: ignore[arg-type]
        print(f"dev: {line}", flush=True)
    from lib.config import Settings

    settings = Settings.from_env()  # fail now, with the variable's name, not on first request
    app = DevServer()
    port = int(os.environ.get("PORT") or 3000)
    print(f"dev: serving {', '.join(app.functions)} and public/ on http://127.0.0.1:{port} "
          f"(AUTH_MODE={settings.auth_mode}, DATA_DIR={settings.data_dir})", flush=True)
    server = serve_in_background(app, port, threads=64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the `finally` below on TERM too
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()
    finally:
        stop_local_sandboxes(settings)


def stop_local_sandboxes(settings: Settings) -> None:
    """Stop the running local sandboxes under DATA_DIR, so no warm agent outlives the server
    that started it (they run detached from the function process)."""
    if settings.sandbox_backend == "local":
        from lib.sandboxes.local import LocalSandboxBackend

        backend = LocalSandboxBackend(settings.data_dir)
        for info in backend.list():
            if info.status == "running":
                backend.stop(info.name)


if __name__ == "__main__":
    main()
