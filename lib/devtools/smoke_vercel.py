"""A live smoke test of the Vercel Sandbox path, for the first minutes after deploying.

    SANDBOX_BACKEND=vercel python -m lib.devtools.smoke_vercel     (with the deployment's env)

With real Sandbox credentials (VERCEL_OIDC_TOKEN, or VERCEL_TOKEN + VERCEL_TEAM_ID +
VERCEL_PROJECT_ID), ANTHROPIC_API_KEY and the Upstash variables, it plays a throwaway user:
two turns (the second must remember the first), a scan of the sandbox for the key (its
environment, its processes' environments and its files: the key must only be added by the
firewall), a stop and a turn that resumes it, then deletes the user's sandbox, transcripts and
record. It prints each step's latency and exits 1 at the first failed check.

The scan never sends the key into the sandbox: it looks for strings of the key's length that
start like it, and compares their SHA-256 with the key's.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from lib.bootstrap import build
from lib.config import Settings
from lib.errors import ServiceError
from lib.events import TurnDone, TurnFailed

# Run inside the sandbox: python3 -c SCAN SHA256 LENGTH PREFIX FOLDER... ; prints each place
# that holds the key (an env var name, a /proc pid, a file path), then "scanned N".
SCAN = """\
import hashlib, os, sys
digest, length, prefix, folders = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4:]
def holds(data):
    start = data.find(prefix)
    while start >= 0:
        if hashlib.sha256(data[start:start + length]).hexdigest() == digest:
            return True
        start = data.find(prefix, start + 1)
    return False
for name, value in os.environ.items():
    if holds(value.encode()):
        print("env", name)
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            if holds(handle.read()):
                print("process", pid)
    except OSError:
        pass
count = 0
for folder in folders:
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.path.islink(path) or os.path.getsize(path) > 50_000_000:
                    continue
                with open(path, "rb") as handle:
                    count += 1
                    if holds(handle.read()):
                        print("file", path)
            except OSError:
                pass
print("scanned", count)
"""


@dataclass
class Report:
    out: TextIO = sys.stdout
    steps: list[tuple[str, float]] = field(default_factory=list)

    def step(self, name: str, action: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = action()
        elapsed = (time.perf_counter() - started) * 1000
        self.steps.append((name, elapsed))
        print(f"  {name:<34} {elapsed:8.0f} ms", file=self.out, flush=True)
        return result


class SmokeFailed(Exception):
    pass


def run_turn(services: Any, user: str, prompt: str) -> TurnDone:
    turn = services.turns.start(user, prompt)
    done = None
    try:
        for event in turn.events():
            if isinstance(event, TurnFailed):
                raise SmokeFailed(f"turn failed: {event.error.code}: {event.error.message}")
            if isinstance(event, TurnDone):
                done = event
    finally:
        turn.live.close()
    if done is None:
        raise SmokeFailed("the turn ended without an answer")
    return done


def scan_for_key(services: Any, user: str, key: str, folders: tuple[str, ...]) -> list[str]:
    """Where in the user's sandbox the key is (nowhere, when all is well): its environment,
    its processes', and the files under its cwd and `folders`."""
    from lib.auth import user_hash

    sandboxes = services.turns.sandboxes
    name = f"{services.settings.sandbox_name_prefix}{user_hash(user, services.settings)}"
    sandbox = sandboxes.attach(name).sandbox
    prefix = key[:7] if key.startswith("sk-ant-") else key[:3]
    base = sandbox.workdir.rsplit("/", 1)[0]
    process = sandbox.run(
        [sandbox.python, "-c", SCAN, hashlib.sha256(key.encode()).hexdigest(), str(len(key)),
         prefix, base, *folders],
        {}, timeout=120)
    lines = list(process.lines())
    if process.wait() != 0 or not lines or not lines[-1].startswith("scanned "):
        raise SmokeFailed(f"the key scan did not run: {lines[-3:]} {process.stderr_tail()}")
    return lines[:-1]


def smoke(settings: Settings, out: TextIO = sys.stdout, folders: tuple[str, ...] = ("/tmp",)) -> int:
    if settings.sandbox_backend != "vercel":
        print("set SANDBOX_BACKEND=vercel and the Sandbox credentials", file=out)
        return 2
    if not settings.anthropic_api_key:
        print("set ANTHROPIC_API_KEY: the smoke test checks that it stays out of the sandbox",
              file=out)
        return 2
    settings = replace(settings, rate_limit=None, max_turns_per_day=0)
    services = build(settings)
    user = f"smoke-{secrets.token_hex(6)}"
    word = secrets.choice(["heron", "walnut", "cobalt", "juniper", "quartz", "saffron"])
    report = Report(out)
    print(f"smoke test of the Vercel Sandbox path as user {user}:", file=out)
    try:
        report.step("turn 1 (create, install, run)", lambda: run_turn(
            services, user, f"Remember this word: {word}. Answer only: OK."))
        second = report.step("turn 2 (warm)", lambda: run_turn(
            services, user, "Which word did I ask you to remember? Answer with the word only."))
        if word not in second.text.lower():
            raise SmokeFailed(f"turn 2 forgot the word {word!r}: {second.text[:200]!r}")
        found = report.step("scan the sandbox for the key", lambda: scan_for_key(
            services, user, settings.anthropic_api_key or "", folders))
        if found:
            raise SmokeFailed(f"the key is in the sandbox: {found}")
        from lib.auth import user_hash

        name = f"{settings.sandbox_name_prefix}{user_hash(user, settings)}"
        report.step("stop the sandbox", lambda: services.turns.sandboxes.stop(name))
        third = report.step("turn 3 (resume after the stop)", lambda: run_turn(
            services, user, "And the word again? Answer with the word only."))
        if word not in third.text.lower():
            raise SmokeFailed(f"after the stop the agent forgot {word!r}: {third.text[:200]!r}")
    except (SmokeFailed, ServiceError) as error:
        print(f"FAILED: {getattr(error, 'message', error)}", file=out)
        return 1
    finally:
        try:
            report.step("delete sandbox, transcripts, record", lambda: services.turns.forget(user))
        except ServiceError as error:
            print(f"cleanup failed ({error.message}): delete sandbox {user} by hand", file=out)
    print("OK: memory across turns and a stop, no key in the sandbox", file=out)
    return 0


def main() -> int:
    try:
        settings = Settings.from_env()
    except ServiceError as error:
        print(error.message)
        return 2
    return smoke(settings)


if __name__ == "__main__":
    sys.exit(main())
