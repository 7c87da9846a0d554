"""Vercel Sandbox backend, on the official `vercel-sandbox` SDK (sync API).

One named, persistent sandbox per user. Every call from the function to the Sandbox API is a
round trip over the internet (60-300 ms each), so a warm turn makes ONE: the turn's command,
started, streamed and finished in a single request (`run_process` with a stdout sink), on the
session id the previous turn left in the user's record (the hint), with no lookup first. The
runner's launcher checks the installation inside that command; only when it reports something
missing does the function install. When the hinted session is stopped or gone (410, 404, 422),
`run` re-attaches by name (`get_or_create_sandbox(resume=True)`) and runs the command again,
which is safe because it never started.

Everything of ours lives under the sandbox's cwd (`/vercel` on the default image,
`/vercel/sandbox` on the legacy ones; always read from the API, never assumed):
  <cwd>/.agent/sdk             claude-agent-sdk, installed once (pip --target) per version
  <cwd>/.agent/installed       the marker recording what was installed (the launcher reads it)
  <cwd>/.agent/home            HOME and CLAUDE_CONFIG_DIR (.claude) of the agent
  <cwd>/work                   the fixed cwd of every turn
No `fs/mkdir`: it is not recursive on the real API and the folders it makes belong to root
(vercel/sandbox packages/vercel-sandbox-mock); file writes create parents, the launcher the rest.

The Anthropic key never enters the sandbox: the network policy injects it as `x-api-key` on
requests to the model's domain, and the runner gets a placeholder. The policy is sent at create
and header values cannot be read back, so a fingerprint of it (model host, key hash, allowed
domains) is kept in a sandbox tag and in the hint; a sandbox with another fingerprint gets the
current policy on attach (a rotated key, a new model host).

The SDK is imported when the backend is built, never on the function's import path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlparse

from lib.errors import SandboxUnavailable, ServiceError
from lib.sandboxes import Attachment, SandboxInfo, SandboxStatus

log = logging.getLogger("agent.sandboxes.vercel")
T = TypeVar("T")

PLACEHOLDER_KEY = "injected-by-the-sandbox-network-policy"
_RUNNING = {"running", "pending"}
# A session stopped (410 sandbox_stopped; the SDK also knows 409), gone (404), or on its way
# down (422 sandbox_stopping / sandbox_snapshotting): attach again by name.
# Sources: Vercel docs errors/SANDBOX_STOPPED (410), SANDBOX_STOPPING and SANDBOX_SNAPSHOTTING
# (422); vercel-sandbox 0.10.0 _internal/recovery.py.
_GONE_STATUSES = {404, 409, 410, 422}
_TRANSIENT_CODES = {"sandbox_stopping", "sandbox_snapshotting"}
# Before a turn the session must have at least TURN_TIMEOUT plus this much time left; else it is
# extended (activity does not extend it: vercel-sandbox-mock, docs "managing").
_TIME_MARGIN = 60.0
_PATIENCE = 60.0  # seconds to wait out 422 (stopping) and 429 (Retry-After) before giving up
_INSTALL_TIMEOUT = 600.0


@dataclass(frozen=True)
class VercelSandboxConfig:
    api_url: str | None
    token: str | None
    team_id: str | None
    project_id: str | None
    region: str
    timeout: int
    turn_timeout: int
    vcpus: int
    image: str | None
    base_snapshot_id: str | None
    agent_sdk: str  # the pip requirement installed in each sandbox
    allowed_domains: tuple[str, ...]
    app_tag: str
    name_prefix: str
    anthropic_api_key: str | None
    anthropic_base_url: str | None

    @property
    def model_domain(self) -> str:
        return urlparse(self.anthropic_base_url or "https://api.anthropic.com").hostname or ""

    @property
    def policy_fingerprint(self) -> str:
        """Changes when the network policy must: another model host, key or allowed domains.
        A truncated hash: the key cannot be read back from it."""
        material = json.dumps([self.model_domain, self.anthropic_api_key or "",
                               sorted(self.allowed_domains)])
        return hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Hint:
    """Where a user's sandbox was at the last commit: enough to run the next command at once."""

    session: str
    cwd: str
    expires_at: float  # unix seconds: when the session's execution time limit runs out
    policy: str

    def dumps(self) -> str:
        return json.dumps([self.session, self.cwd, self.expires_at, self.policy])

    @classmethod
    def loads(cls, raw: str | None) -> Hint | None:
        try:
            session, cwd, expires_at, policy = json.loads(raw or "")
            return cls(str(session), str(cwd), float(expires_at), str(policy))
        except (ValueError, TypeError):
            return None


def bind_request_headers(headers: Mapping[str, str]) -> None:
    """On Vercel the OIDC token arrives as the `x-vercel-oidc-token` request header: hand it to
    the SDK's credential resolver for this request."""
    from vercel.headers import set_headers

    set_headers({k.lower(): v for k, v in headers.items()})


def _is_gone(error: BaseException) -> bool:
    from vercel.sandbox.sync import SandboxApiError

    return isinstance(error, SandboxApiError) and error.status_code in _GONE_STATUSES


def _wait_hint(error: BaseException) -> float | None:
    """Seconds to wait before trying again, for errors that pass: 429 (its Retry-After) and 422
    while the sandbox stops or snapshots; None for the rest."""
    from vercel.sandbox.sync import SandboxApiError

    if not isinstance(error, SandboxApiError):
        return None
    if error.status_code == 429:
        try:
            return max(0.1, float(error.response.headers.get("retry-after") or 1))
        except ValueError:
            return 1.0
    if error.status_code == 422 and error.code in _TRANSIENT_CODES:
        return 0.5
    return None


def patiently(call: Callable[[], T], may_retry: Callable[[], bool] = lambda: True,
              budget: float = _PATIENCE) -> T:
    """Run one Sandbox API call, waiting out rate limits (429 + Retry-After: the SDK does not
    retry them, vercel-sandbox 0.10.0) and a sandbox that is stopping or snapshotting (422)."""
    deadline = time.monotonic() + budget
    while True:
        try:
            return call()
        except Exception as error:
            wait = _wait_hint(error)
            if wait is None or time.monotonic() + wait > deadline or not may_retry():
                raise
            log.info("sandbox API busy (%s); retrying in %.1f s", error, wait)
            time.sleep(wait)


def _unavailable(error: BaseException, what: str) -> SandboxUnavailable:
    code = getattr(error, "code", None)
    if code == "executable_not_found":
        return SandboxUnavailable(f"{what}: the sandbox image has no python3 (SANDBOX_IMAGE)")
    return SandboxUnavailable(f"{what}: Vercel Sandbox: {error}")


class _LineSink:
    """A text sink for the SDK's output router: whole lines go to `put`, as they complete."""

    def __init__(self, put: Callable[[str], None]) -> None:
        self.put = put
        self.partial = ""

    def write(self, data: str) -> int:
        *lines, self.partial = (self.partial + data).split("\n")
        for line in lines:
            self.put(line)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.partial:
            self.put(self.partial)
            self.partial = ""


class VercelProcess:
    """One command, run with `run_process` in a thread: a single request carries its start,
    its output and its exit status. `kill` costs a request only while it is running."""

    def __init__(self, sandbox: VercelSandbox, argv: list[str], env: Mapping[str, str],
                 timeout: float) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=50)
        self._handle: Any = None
        self._killed = threading.Event()
        self._finished = threading.Event()
        self._guard = threading.Lock()
        self._code: int | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sandbox, argv, dict(env), timeout),
                                        daemon=True)
        self._thread.start()

    def _run(self, sandbox: VercelSandbox, argv: list[str], env: dict[str, str],
             timeout: float) -> None:
        stdout = _LineSink(self._lines.put)
        try:
            self._code = sandbox.execute(argv, env, timeout, stdout=stdout,
                                         stderr=_LineSink(self._stderr.append),
                                         on_start=self._started)
        except BaseException as error:  # reported by wait()
            self._error = error
        finally:
            stdout.close()
            self._finished.set()
            self._lines.put(None)

    def _started(self, handle: Any) -> None:
        with self._guard:
            self._handle = handle
        if self._killed.is_set():
            self.kill()

    def lines(self) -> Iterator[str]:
        while (line := self._lines.get()) is not None:
            yield line

    def wait(self) -> int:
        self._thread.join()
        if isinstance(self._error, ServiceError):
            raise self._error
        if self._error is not None:
            raise _unavailable(self._error, "the turn's command failed") from None
        return -9 if self._code is None else self._code

    def kill(self) -> None:
        self._killed.set()
        with self._guard:
            handle = self._handle
        if handle is None or self._finished.is_set():
            return  # not started (it is killed on start) or already done: no request
        try:
            handle.kill()
        except Exception as error:  # already gone, or the session stopped
            log.info("kill: %s", error)

    def interrupt(self) -> None:
        """SIGINT to the running command: one request (none once it ended or before it
        started)."""
        with self._guard:
            handle = self._handle
        if handle is None or self._finished.is_set():
            return
        try:
            handle.send_signal(signal.SIGINT)
        except Exception as error:  # already gone, or the session stopped
            log.info("interrupt: %s", error)

    def stderr_tail(self, limit: int = 2000) -> str:
        return "\n".join(self._stderr)[-limit:]


class VercelSandbox:
    python = "python3"

    def __init__(self, backend: VercelSandboxBackend, name: str, hint: Hint) -> None:
        self.backend = backend
        self.name = name
        self._hint = hint
        base = hint.cwd.rstrip("/")
        self.agent_dir = f"{base}/.agent"
        self.home = f"{self.agent_dir}/home"
        self.workdir = f"{base}/work"
        self.sdk_dir = f"{self.agent_dir}/sdk"
        self.install_marker = (f"{self.agent_dir}/installed", backend.config.agent_sdk)
        self.env = {"PYTHONPATH": self.sdk_dir}
        if backend.config.anthropic_api_key:
            self.env["ANTHROPIC_API_KEY"] = PLACEHOLDER_KEY
            # The firewall adds the key over TLS it intercepts: the CLI must trust its CA,
            # which the sandbox adds to the system trust store (see the runner).
            self.env["AGENT_TRUST_SYSTEM_CA"] = "1"

    @property
    def hint(self) -> str:
        return self._hint.dumps()

    def _session(self) -> Any:
        """A handle on the hinted session, made without a request. The SDK has no public
        constructor for one (vercel-sandbox 0.10.0): its runtime-session class over the
        client's service, as `SyncSandbox.current_session` builds it."""
        from vercel.sandbox._internal.state import SandboxRuntimeSessionState
        from vercel.sandbox.sync import SyncSandboxRuntimeSession

        return SyncSandboxRuntimeSession(
            payload=SandboxRuntimeSessionState(id=self._hint.session, cwd=self._hint.cwd),
            service=self.backend.client._service,
        )

    def _reattach(self) -> None:
        hint = self.backend.locate(self.name)
        if hint.cwd != self._hint.cwd:  # recreated from another image: paths differ
            raise SandboxUnavailable(f"sandbox {self.name} was recreated with another working "
                                     "directory; try again")
        self._hint = hint

    def _on_session(self, call: Callable[[Any], T], what: str,
                    may_retry: Callable[[], bool] = lambda: True) -> T:
        """Run `call` on the hinted session; if it is stopped or gone, attach again by name and
        run it once more, as long as `may_retry()` (a command that started must not run twice)."""
        try:
            try:
                return patiently(lambda: call(self._session()), may_retry)
            except Exception as error:
                if not (_is_gone(error) and may_retry()):
                    raise
            log.info("sandbox %s: session %s is gone; attaching again", self.name,
                     self._hint.session)
            self._reattach()
            return patiently(lambda: call(self._session()), may_retry)
        except ServiceError:
            raise
        except Exception as error:
            raise _unavailable(error, what) from None

    def _ensure_time(self, needed: float) -> None:
        """Extend the session's execution time limit when the turn might outlive it."""
        left = self._hint.expires_at - time.time()
        if left >= needed + _TIME_MARGIN:
            return
        extension = max(1.0, needed + _TIME_MARGIN - left)
        session = self._on_session(lambda s: s.extend_execution_time_limit(extension),
                                   "extending the sandbox's time limit")
        self._hint = self.backend.hint_for(session, self._hint.cwd, self._hint.policy)

    def execute(self, argv: list[str], env: Mapping[str, str], timeout: float, *,
                stdout: Any, stderr: Any, on_start: Callable[[Any], None]) -> int:
        """Run a command to its end in one request; if the session is stopped or gone before
        it started, attach again and run it there."""
        started = threading.Event()

        def start(handle: Any) -> None:
            started.set()
            on_start(handle)

        self._ensure_time(timeout)
        return self._on_session(
            lambda session: session.run_process(
                argv[0], argv[1:], cwd=self._hint.cwd, env=env, kill_after=max(0.1, timeout),
                stdout=stdout, stderr=stderr, on_start=start).returncode,
            "running the turn", may_retry=lambda: not started.is_set())

    def run(self, argv: list[str], env: Mapping[str, str], timeout: float) -> VercelProcess:
        return VercelProcess(self, argv, env, timeout)

    def call_agent(self, address: str, job: bytes, timeout: float) -> None:
        """No way in but the API's commands: an agent's socket is inside the microVM. (An
        exposed port, `ports=` at create, could be one, with a secret of our own: not built.)"""
        return None

    def write_files(self, files: Mapping[str, bytes]) -> None:
        def write(session: Any) -> None:
            with session.fs.batch() as batch:
                for path, data in files.items():
                    batch.write_bytes(path, data)

        self._on_session(write, "writing files into the sandbox")

    def install_agent(self, timeout: float = _INSTALL_TIMEOUT) -> None:
        """pip install the pinned claude-agent-sdk into the agent's folder and, only if that
        worked, write the marker the launcher checks: one command. A failure answers 503 and
        the next turn tries again."""
        requirement = self.backend.config.agent_sdk
        marker, content = self.install_marker
        done = self._on_session(lambda s: s.run_process(
            self.python, ["-c", _INSTALLER, self.python, self.sdk_dir, requirement, marker, content],
            cwd=self._hint.cwd, capture_output=True, kill_after=min(timeout, _INSTALL_TIMEOUT),
        ), "installing the agent SDK")  # pip --target --upgrade: safe to run again
        if done.returncode != 0:
            detail = (done.stderr or "").strip()[-500:]
            raise SandboxUnavailable(
                f"installing {requirement} in sandbox {self.name} failed "
                f"(exit {done.returncode}): {detail}; the next turn tries again"
            )


# python3 -c _INSTALLER PYTHON TARGET REQUIREMENT MARKER CONTENT
_INSTALLER = """\
import os, subprocess, sys
python, target, requirement, marker, content = sys.argv[1:6]
done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                       "--upgrade", "--target", target, requirement])
if done.returncode == 0:
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write(content)
sys.exit(done.returncode)
"""


class VercelSandboxBackend:
    def __init__(self, config: VercelSandboxConfig) -> None:
        from vercel.sandbox.sync import SandboxCredentials, SandboxServiceOptions, SyncSandboxClient

        credentials = None
        if config.token and config.team_id and config.project_id:
            static = SandboxCredentials(config.token, config.team_id, config.project_id)
            credentials = lambda: static  # noqa: E731
        self.config = config
        self.client = SyncSandboxClient.create(options=SandboxServiceOptions(
            base_url=config.api_url, credentials_factory=credentials, region=config.region))

    # attach --------------------------------------------------------------------------------------
    def attach(self, name: str, hint: str | None = None) -> Attachment:
        known = Hint.loads(hint)
        if known is not None and known.policy == self.config.policy_fingerprint:
            return Attachment(VercelSandbox(self, name, known), False)  # no request at all
        created = self._attach_box(name)
        return Attachment(VercelSandbox(self, name, created[0]), created[1])

    def locate(self, name: str) -> Hint:
        """Attach by name (resuming or creating), for a session found gone mid-way."""
        return self._attach_box(name)[0]

    def _attach_box(self, name: str) -> tuple[Hint, bool]:
        from vercel.sandbox.sync import SandboxApiError, SandboxError

        source_allowed = True
        clashes = 0
        try:
            while True:
                try:
                    creation = self._creation(name, source_allowed)
                    box, created = patiently(lambda: self.client.get_or_create_sandbox(
                        name=name, resume=True, **creation))  # noqa: B023 - called at once
                    break
                except SandboxApiError as error:
                    if (error.status_code == 400 and "already exists" in str(error)
                            and clashes < 2):
                        clashes += 1  # a concurrent request created it first (400 on Vercel)
                        continue
                    if (error.status_code == 410 and error.code == "snapshot_not_found"
                            and source_allowed and self.config.base_snapshot_id):
                        log.warning("SANDBOX_BASE_SNAPSHOT_ID %s is gone (expired?): creating "
                                    "sandboxes from the image, with an install; build a new "
                                    "base snapshot", self.config.base_snapshot_id)
                        source_allowed = False
                        continue
                    raise
            policy = self.config.policy_fingerprint
            if (box.tags or {}).get("policy") != policy:
                log.info("sandbox %s: network policy changed; updating it", name)
                patiently(lambda: box.update(network_policy=self._network_policy(),
                                             tags=self._tags(name)))
            session = box.current_session
            if session is None or not box.cwd:
                raise SandboxUnavailable(f"Vercel Sandbox: sandbox {name} has no session")
            return self.hint_for(session, box.cwd, policy), created
        except SandboxError as error:
            raise _unavailable(error, f"attaching sandbox {name}") from None

    @staticmethod
    def hint_for(session: Any, cwd: str, policy: str) -> Hint:
        started = (session.started_at or session.requested_at or time.time() * 1000) / 1000
        limit = session.execution_time_limit
        expires = started + (limit.total_seconds() if limit else 300.0)  # the API's default
        return Hint(session.id, cwd, expires, policy)

    def _tags(self, name: str) -> dict[str, str]:
        return {"app": self.config.app_tag, "user": name.removeprefix(self.config.name_prefix),
                "policy": self.config.policy_fingerprint}

    def _network_policy(self) -> Any:
        from vercel.sandbox.sync import NetworkPolicy, NetworkPolicyRule, NetworkPolicyTransform

        config = self.config
        model_rules = []
        if config.anthropic_api_key:
            model_rules.append(NetworkPolicyRule(transform=[NetworkPolicyTransform(
                headers={"x-api-key": config.anthropic_api_key})]))
        return NetworkPolicy.custom(allow={config.model_domain: model_rules,
                                           **{domain: [] for domain in config.allowed_domains}})

    def _creation(self, name: str, from_snapshot: bool = True) -> dict[str, Any]:
        from vercel.sandbox.sync import SandboxResources, SnapshotSource

        config = self.config
        args: dict[str, Any] = {
            "persistent": True,
            "region": config.region,
            "execution_time_limit": timedelta(seconds=config.timeout),
            "resources": SandboxResources(vcpus=config.vcpus),
            "network_policy": self._network_policy(),
            "tags": self._tags(name),
        }
        if config.image:
            args["image"] = config.image
        if config.base_snapshot_id and from_snapshot:
            args["source"] = SnapshotSource(snapshot_id=config.base_snapshot_id)
        return args

    def make_base_snapshot(self, name: str) -> str:
        """Create a sandbox, install the agent SDK, snapshot it with no expiry (which stops it)
        and destroy the builder: new sandboxes created from the snapshot id
        (SANDBOX_BASE_SNAPSHOT_ID) need no install."""
        sandbox = self.attach(name).sandbox
        assert isinstance(sandbox, VercelSandbox)
        sandbox.install_agent()
        box = self.client.get_sandbox(name=name)
        snapshot = patiently(lambda: box.snapshot(expiration=0))  # 0: never expires
        patiently(box.destroy)
        return str(snapshot.id)

    # lifecycle -----------------------------------------------------------------------------------
    def _get(self, name: str) -> Any | None:
        from vercel.sandbox.sync import SandboxApiError

        try:
            return patiently(lambda: self.client.get_sandbox(name=name))
        except SandboxApiError as error:
            if error.status_code in (404, 410):
                return None
            raise SandboxUnavailable(f"Vercel Sandbox: {error}") from None

    def status(self, name: str) -> SandboxStatus | None:
        box = self._get(name)
        if box is None:
            return None
        return "running" if str(box.status) in _RUNNING else "stopped"

    def stop(self, name: str) -> None:
        box = self._get(name)
        if box is not None and str(box.status) in _RUNNING:
            patiently(box.stop)

    def destroy(self, name: str) -> None:
        box = self._get(name)
        if box is not None:
            patiently(box.destroy)

    def list(self) -> list[SandboxInfo]:
        from vercel.sandbox.sync import SandboxQueryByCreatedAt, TagFilter

        query = SandboxQueryByCreatedAt(tag=TagFilter(key="app", value=self.config.app_tag))
        return [SandboxInfo(box.name, "running" if str(box.status) in _RUNNING else "stopped")
                for box in self.client.query_sandboxes(query=query)]
