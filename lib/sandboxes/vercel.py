"""Vercel Sandbox backend, on the official `vercel-sandbox` SDK (sync API).

One named, persistent sandbox per user: `get_or_create_sandbox(name, resume=True)` creates it,
resumes it when stopped, and recreates it when its snapshot is gone (`created` is then true, so
the turn restores the transcript). Everything of ours lives under the sandbox's cwd:
  <cwd>/.agent/sdk             claude-agent-sdk, installed once (pip --target) per version
  <cwd>/.agent/bootstrap.json  the marker recording what was installed
  <cwd>/.agent/home            HOME and CLAUDE_CONFIG_DIR (.claude) of the agent
  <cwd>/work                   the fixed cwd of every turn
The Anthropic key never enters the sandbox: the network policy injects it as `x-api-key` on
requests to the model's domain, and the runner gets a placeholder. Egress is deny-by-default:
only the model's domain and SANDBOX_ALLOWED_DOMAINS are reachable.

The SDK is imported when the backend is built, never on the function's import path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from lib.errors import SandboxUnavailable
from lib.sandboxes import Attachment, SandboxInfo, SandboxStatus

log = logging.getLogger("agent.sandboxes.vercel")

PLACEHOLDER_KEY = "injected-by-the-sandbox-network-policy"
_RUNNING = {"running", "pending"}


@dataclass(frozen=True)
class VercelSandboxConfig:
    api_url: str | None
    token: str | None
    team_id: str | None
    project_id: str | None
    region: str
    timeout: int
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


def bind_request_headers(headers: Mapping[str, str]) -> None:
    """On Vercel the OIDC token arrives as the `x-vercel-oidc-token` request header: hand it to
    the SDK's credential resolver for this request."""
    from vercel.headers import set_headers

    set_headers({k.lower(): v for k, v in headers.items()})


class VercelProcess:
    def __init__(self, process: Any) -> None:
        self._process = process

    def lines(self) -> Iterator[str]:
        for line in self._process.stdout:
            yield line.rstrip("\n")

    def wait(self) -> int:
        return int(self._process.wait())

    def kill(self) -> None:
        try:
            self._process.kill()
        except Exception as error:  # already gone, or the session stopped
            log.info("kill: %s", error)

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            return self._process.stderr.read()[-limit:]
        except Exception:
            return ""


class VercelSandbox:
    python = "python3"

    def __init__(self, box: Any, config: VercelSandboxConfig) -> None:
        self.box = box
        self.name = box.name
        base = str(box.cwd).rstrip("/")
        self.agent_dir = f"{base}/.agent"
        self.home = f"{self.agent_dir}/home"
        self.workdir = f"{base}/work"
        self.sdk_dir = f"{self.agent_dir}/sdk"
        self.env = {"PYTHONPATH": self.sdk_dir}
        if config.anthropic_api_key:
            self.env["ANTHROPIC_API_KEY"] = PLACEHOLDER_KEY

    def run(self, argv: list[str], env: Mapping[str, str]) -> VercelProcess:
        return VercelProcess(self.box.create_process(argv[0], argv[1:], cwd=self.workdir,
                                                     env=dict(env)))

    def write_file(self, path: str, data: bytes) -> None:
        self.box.fs.write_bytes(path, data)

    def exists(self, path: str) -> bool:
        return bool(self.box.fs.exists(path))


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
        self.marker = json.dumps({"agent_sdk": config.agent_sdk}, sort_keys=True)

    # attach --------------------------------------------------------------------------------------
    def attach(self, name: str) -> Attachment:
        from vercel.sandbox.sync import SandboxApiError, SandboxError

        try:
            try:
                box, created = self.client.get_or_create_sandbox(name=name, resume=True,
                                                                  **self._creation(name))
            except SandboxApiError as error:
                if error.status_code != 409:  # 409: a concurrent request created it first
                    raise
                box, created = self.client.get_or_create_sandbox(name=name, resume=True,
                                                                  **self._creation(name))
            sandbox = VercelSandbox(box, self.config)
            self._bootstrap(sandbox)
        except SandboxError as error:
            raise SandboxUnavailable(f"Vercel Sandbox: {error}") from None
        return Attachment(sandbox, created)

    def _creation(self, name: str) -> dict[str, Any]:
        from vercel.sandbox.sync import (
            NetworkPolicy,
            NetworkPolicyRule,
            NetworkPolicyTransform,
            SandboxResources,
            SnapshotSource,
        )

        config = self.config
        model_rules = []
        if config.anthropic_api_key:
            model_rules.append(NetworkPolicyRule(transform=[NetworkPolicyTransform(
                headers={"x-api-key": config.anthropic_api_key})]))
        allow = {config.model_domain: model_rules,
                 **{domain: [] for domain in config.allowed_domains}}
        args: dict[str, Any] = {
            "persistent": True,
            "region": config.region,
            "execution_time_limit": timedelta(seconds=config.timeout),
            "resources": SandboxResources(vcpus=config.vcpus),
            "network_policy": NetworkPolicy.custom(allow=allow),
            "tags": {"app": config.app_tag, "user": name.removeprefix(config.name_prefix)},
        }
        if config.image:
            args["image"] = config.image
        if config.base_snapshot_id:
            args["source"] = SnapshotSource(snapshot_id=config.base_snapshot_id)
        return args

    def _bootstrap(self, sandbox: VercelSandbox) -> None:
        """Install claude-agent-sdk once per sandbox and version; a failure is retried next turn."""
        from vercel.sandbox.sync import SandboxError

        marker = f"{sandbox.agent_dir}/bootstrap.json"
        try:
            if sandbox.box.fs.read_text(marker) == self.marker:
                return
        except SandboxError:
            pass  # no marker yet
        sandbox.box.fs.mkdir(f"{sandbox.home}/.claude")
        sandbox.box.fs.mkdir(sandbox.workdir)
        done = sandbox.box.run_process(
            sandbox.python,
            ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--upgrade",
             "--target", sandbox.sdk_dir, self.config.agent_sdk],
            capture_output=True,
        )
        if done.returncode != 0:
            detail = (done.stderr or "").strip()[-500:]
            raise SandboxUnavailable(
                f"installing {self.config.agent_sdk} in sandbox {sandbox.name} failed "
                f"(exit {done.returncode}): {detail}; the next turn tries again"
            )
        sandbox.box.fs.write_text(marker, self.marker)

    def make_base_snapshot(self, name: str) -> str:
        """Create and bootstrap a sandbox, snapshot it (which stops it) and return the snapshot
        id: new sandboxes created from it (SANDBOX_BASE_SNAPSHOT_ID) need no install."""
        sandbox = self.attach(name).sandbox
        assert isinstance(sandbox, VercelSandbox)
        snapshot = sandbox.box.snapshot()
        return str(snapshot.id)

    # lifecycle -----------------------------------------------------------------------------------
    def _get(self, name: str) -> Any | None:
        from vercel.sandbox.sync import SandboxApiError

        try:
            return self.client.get_sandbox(name=name)
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
            box.stop()

    def destroy(self, name: str) -> None:
        box = self._get(name)
        if box is not None:
            box.destroy()

    def list(self) -> list[SandboxInfo]:
        from vercel.sandbox.sync import SandboxQueryByCreatedAt, TagFilter

        query = SandboxQueryByCreatedAt(tag=TagFilter(key="app", value=self.config.app_tag))
        return [SandboxInfo(box.name, "running" if str(box.status) in _RUNNING else "stopped")
                for box in self.client.query_sandboxes(query=query)]
