"""Code that runs INSIDE the sandbox. `agent_runner.py` is a standalone program (stdlib +
claude-agent-sdk only): it is copied into the sandbox and never imports `lib`."""

from pathlib import Path

RUNNER_SOURCE_PATH = Path(__file__).with_name("agent_runner.py")
