"""Run one resumed Claude Agent SDK query inside the sandbox and report it as JSON lines.

Usage: python agent_runner.py JOB_FILE

The job file is JSON: {"prompt": str, "resume": str | null, "cwd": str, "options": {...},
"restore": {"entries": [...], "subkeys": {subpath: [...]}} | null} with options among model,
system_prompt, allowed_tools, disallowed_tools, permission_mode, max_turns. `restore` comes
when the sandbox lost the transcript: the SDK materialises it from our store's `load`, and it is
written into this sandbox's config dir so later turns resume from local disk again.
Every stdout line is one JSON object with a "type":
  session    {"session_id"}                      as soon as the CLI reports it
  mirror     {"key", "entries"}                  transcript lines to store durably (the SDK's
                                                 SessionStore.append, handed to the function)
  restore_needed {"session_id"}                  resume asked, no local transcript, no restore
                                                 given: nothing ran (exit status 3)
  text       {"text"}                            a streamed text delta
  tool_use   {"id", "name", "input"}             the agent called a tool
  tool_result {"tool_use_id", "is_error"}        a tool answered
  result     {"session_id", "text", "is_error", "subtype", "errors", "usage", "cost_usd", "num_turns"}
  error      {"code", "message", "detail"}       the query could not run (exit status 1);
                                                 detail is the CLI's stderr, for logs only
This program sees no storage credentials: it talks to the function only through its argv, the
job file and stdout. It depends on nothing but the standard library and claude-agent-sdk.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections import deque
from pathlib import Path
from typing import Any

ALLOWED_OPTIONS = (
    "model", "system_prompt", "allowed_tools", "disallowed_tools", "permission_mode", "max_turns",
)


def emit(kind: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"type": kind, **fields}) + "\n")
    sys.stdout.flush()


class MirrorStore:
    """The SDK's SessionStore, as far as this sandbox is concerned: every appended batch goes to
    stdout for the function to store durably (the sandbox holds no store credentials). `load`
    finds nothing, so the SDK resumes from the local transcript."""

    async def append(self, key: dict[str, Any], entries: list[Any]) -> None:
        emit("mirror", key=dict(key), entries=entries)

    async def load(self, key: dict[str, Any]) -> list[Any] | None:
        return None


class RestoreStore:
    """A SessionStore holding one transcript handed over by the function, for materialising."""

    def __init__(self, transcript: dict[str, Any]) -> None:
        self.entries = transcript.get("entries") or []
        self.subkeys = transcript.get("subkeys") or {}

    async def append(self, key: dict[str, Any], entries: list[Any]) -> None:
        pass

    async def load(self, key: dict[str, Any]) -> list[Any] | None:
        subpath = key.get("subpath")
        return (self.subkeys.get(subpath) if subpath else self.entries) or None

    async def list_subkeys(self, key: dict[str, Any]) -> list[str]:
        return list(self.subkeys)


def config_dir() -> Path:
    return Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")


def local_transcript(cwd: str, session_id: str) -> Path:
    from claude_agent_sdk import project_key_for_directory

    return config_dir() / "projects" / project_key_for_directory(cwd) / f"{session_id}.jsonl"


async def restore(job: dict[str, Any], cwd: str) -> None:
    """Let the SDK materialise the session from a store, then keep the files in this sandbox's
    config dir (the SDK's own copy lives in a temp dir for one query only)."""
    from claude_agent_sdk import ClaudeAgentOptions
    from claude_agent_sdk._internal.session_resume import materialize_resume_session

    options = ClaudeAgentOptions(resume=job["resume"], cwd=cwd,
                                 session_store=RestoreStore(job["restore"]))
    materialized = await materialize_resume_session(options)
    if materialized is None:
        raise RuntimeError("the transcript to restore was empty or the session id is invalid")
    try:
        shutil.copytree(materialized.config_dir / "projects", config_dir() / "projects",
                        dirs_exist_ok=True)
    finally:
        await materialized.cleanup()


def build_options(job: dict[str, Any], cwd: str, stderr_tail: deque[str]) -> Any:
    from claude_agent_sdk import ClaudeAgentOptions

    options = {k: v for k, v in (job.get("options") or {}).items() if k in ALLOWED_OPTIONS and v}
    if options.get("permission_mode") == "bypassPermissions" and os.geteuid() == 0:
        os.environ["IS_SANDBOX"] = "1"  # the CLI refuses to bypass permissions as root otherwise
    return ClaudeAgentOptions(
        resume=job.get("resume") or None,
        cwd=cwd,
        include_partial_messages=True,
        session_store=MirrorStore(),
        session_store_flush="eager",  # mirror as the turn goes: a killed turn loses least
        stderr=stderr_tail.append,
        **options,
    )


async def run(job: dict[str, Any]) -> int:
    from claude_agent_sdk import (
        AssistantMessage,
        ResultMessage,
        StreamEvent,
        SystemMessage,
        ToolResultBlock,
        ToolUseBlock,
        UserMessage,
        query,
    )

    stderr_tail: deque[str] = deque(maxlen=20)
    got_result = False
    cwd = job.get("cwd") or os.getcwd()
    try:
        if job.get("resume") and job.get("restore"):
            await restore(job, cwd)
        elif job.get("resume") and not local_transcript(cwd, job["resume"]).exists():
            emit("restore_needed", session_id=job["resume"])
            return 3
        options = build_options(job, cwd, stderr_tail)
        async for message in query(prompt=job["prompt"], options=options):
            if isinstance(message, SystemMessage) and message.subtype == "init":
                emit("session", session_id=message.data.get("session_id"))
            elif isinstance(message, StreamEvent) and message.parent_tool_use_id is None:
                event = message.event
                delta = event.get("delta") or {}
                if event.get("type") == "content_block_delta" and delta.get("type") == "text_delta":
                    emit("text", text=delta.get("text", ""))
            elif isinstance(message, AssistantMessage):
                for block in message.content:
                    if isinstance(block, ToolUseBlock):
                        emit("tool_use", id=block.id, name=block.name, input=block.input)
            elif isinstance(message, UserMessage) and isinstance(message.content, list):
                for block in message.content:
                    if isinstance(block, ToolResultBlock):
                        emit("tool_result", tool_use_id=block.tool_use_id,
                             is_error=bool(block.is_error))
            elif isinstance(message, ResultMessage):
                got_result = True
                emit("result", session_id=message.session_id, text=message.result or "",
                     is_error=message.is_error, subtype=message.subtype,
                     errors=message.errors or [], usage=message.usage or {},
                     cost_usd=message.total_cost_usd, num_turns=message.num_turns)
    except Exception as error:  # report, never hang: the function maps this to a clear error
        detail = " | ".join(line.strip() for line in stderr_tail if line.strip())
        emit("error", code="agent_failed", message=f"{type(error).__name__}: {error}"[:1000],
             detail=detail[-2000:])
        return 1
    if not got_result:
        emit("error", code="agent_failed", message="the agent ended without a result")
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        emit("error", code="bad_job", message="usage: agent_runner.py JOB_FILE")
        return 2
    try:
        with open(argv[1], encoding="utf-8") as handle:
            job = json.load(handle)
        os.remove(argv[1])  # the prompt need not outlive the turn on the sandbox's disk
        if not isinstance(job.get("prompt"), str):
            raise ValueError("job has no prompt")
    except (OSError, ValueError) as error:
        emit("error", code="bad_job", message=str(error))
        return 2
    return asyncio.run(run(job))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
