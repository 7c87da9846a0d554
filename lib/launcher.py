"""The function's side of the runner: the ONE command a turn runs in a sandbox (the launcher,
the runner and the job), the environment it gets, and the install the launcher asks for.

On Vercel every Sandbox API call is a round trip over the internet, so nothing is checked or
written before the command: the launcher (`lib/runner/__init__.py`) checks the installation
inside it and answers `needs_install` when something is missing; `install` then puts it there.
Where the backend can reach the sandbox's warm agent itself (`Sandbox.call_agent`), a warm turn
runs no command at all: `start` hands the job to the agent's socket.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from lib.config import Settings
from lib.runner import LAUNCHER, PYTHON_FLAGS, RUNNER_SOURCE_PATH, agent_address
from lib.sandboxes import Process, Sandbox

# The CLI only needs these to run offline or against the real API; nothing else of ours leaks in.
_QUIET_CLI = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
_PLACEHOLDER_KEY = "placeholder-key-for-a-keyless-model-server"
# A job travels in the command up to this size of its base64; a larger one (a restored
# transcript) goes in a file first. Linux takes 128 KiB per argument.
JOB_ARG_LIMIT = 64 * 1024


class Launcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source = RUNNER_SOURCE_PATH.read_bytes()
        self.version = hashlib.sha256(self.source).hexdigest()[:12]

    def runner_path(self, sandbox: Sandbox) -> str:
        """Where this version of the runner lives in the sandbox (a new version, a new file)."""
        return f"{sandbox.home}/.agent-runner/{self.version}/agent_runner.py"

    def start(self, sandbox: Sandbox, job: dict[str, Any], job_id: str,
              timeout: float) -> Process:
        """Start the turn: straight at the warm agent when the backend can reach it, else by
        the command (which starts an agent for the next turn, or runs one-shot)."""
        env = self.env(sandbox)
        if self.settings.agent_warm:
            line = json.dumps({"cwd": sandbox.workdir, **job}).encode() + b"\n"
            call = sandbox.call_agent(agent_address(self.runner_path(sandbox), env), line, timeout)
            if call is not None:
                return call
        return sandbox.run(self.command(sandbox, job, job_id), env, timeout)

    def command(self, sandbox: Sandbox, job: dict[str, Any], job_id: str) -> list[str]:
        """The turn's command: the launcher, then the runner with the job (in the command
        when small, else in a file written first)."""
        encoded = base64.b64encode(json.dumps(job).encode()).decode()
        if len(encoded) <= JOB_ARG_LIMIT:
            job_args = ["--job", encoded]
        else:
            job_file = f"{sandbox.home}/.agent-runner/jobs/{job_id}.json"
            sandbox.write_files({job_file: json.dumps(job).encode()})
            job_args = ["--job-file", job_file]
        marker, want = sandbox.install_marker or ("", "")
        argv = [sandbox.python, PYTHON_FLAGS, "-c", LAUNCHER, self.runner_path(sandbox),
                sandbox.workdir, marker, want, *job_args]
        return [*argv, "--warm"] if self.settings.agent_warm else argv

    def env(self, sandbox: Sandbox) -> dict[str, str]:
        """The runner's environment: its own HOME and config dir, the model, nothing else of
        ours (no state or storage credentials)."""
        env = {"HOME": sandbox.home, "CLAUDE_CONFIG_DIR": f"{sandbox.home}/.claude",
               "AGENT_WARM_IDLE": str(self.settings.agent_warm_idle), **_QUIET_CLI,
               # a model outage fails the turn in seconds, not after minutes of retries
               "CLAUDE_CODE_MAX_RETRIES": str(self.settings.model_retries)}
        if self.settings.anthropic_base_url:
            env["ANTHROPIC_BASE_URL"] = self.settings.anthropic_base_url
        env["ANTHROPIC_API_KEY"] = self.settings.anthropic_api_key or _PLACEHOLDER_KEY
        return {**env, **sandbox.env}  # e.g. Vercel: the key is injected by the network policy

    def install(self, sandbox: Sandbox, missing: list[str], timeout: float) -> None:
        """What the launcher found missing: the agent SDK (backend-specific, within `timeout`
        seconds), then the runner."""
        if "agent" in missing:
            sandbox.install_agent(timeout)
        sandbox.write_files({self.runner_path(sandbox): self.source})
