"""Run one resumed Claude Agent SDK turn inside the sandbox and report it as JSON lines.

Usage: python agent_runner.py (--job BASE64_JSON | --job-file PATH) [--warm]   a one-shot turn
       python agent_runner.py --start-agent NAME   start the warm agent, wait till it listens
       python agent_runner.py --serve NAME         the warm agent itself, at the abstract Unix
                                                   socket NAME (the launcher names it)

The function starts it through the launcher in `lib/runner/__init__.py`, which has already
checked the installation and entered the turn's work dir.

One-shot runs the turn with `query()` in this process. A warm turn (`--warm`) goes to a
long-lived agent process in the same sandbox that keeps a connected `ClaudeSDKClient` per
session, so a turn skips starting Python, the SDK and the Claude Code CLI: the launcher relays
it over a Unix socket (or the function itself connects, where it can reach the socket: the
local backend), and has this program start the agent (`--start-agent`) when there is none; it
runs this program one-shot (ignoring `--warm`) only if the agent cannot be reached. The agent
serves one turn at a time, stops a turn whose caller went away (the function's deadline),
and exits after AGENT_WARM_IDLE seconds (default 300) without a turn or when its sandbox's HOME
is gone.

The job travels in the command itself (`--job`, base64 of its JSON: one request per turn), or,
when too large for an argument (a restore), in a file the runner deletes once read. It is JSON:
{"prompt": str, "resume": str | null, "cwd": str (the turn's work dir; default: this process's
cwd), "options": {...},
"committed": str | null (the uuid of the last committed entry: a local transcript without it is
damaged, and restore_needed is said),
"resume_at": str | null, "drops_turn": str | null (answer again: resume the session at the
entry `resume_at`, dropping the turn of the prompt `drops_turn`; the SDK's resume_session_at and
resume_drops_turn),
"restore": {"entries": [...], "subkeys": {subpath: [...]}} | null} with options among model,
system_prompt, allowed_tools, disallowed_tools, permission_mode, max_turns, thinking (the SDK's
ThinkingConfig). `restore` comes
when the sandbox lost the transcript: the SDK materialises it from our store's `load`, and it is
written into this sandbox's config dir so later turns resume from local disk again.
Every stdout line is one JSON object with a "type":
  session    {"session_id"}                      as soon as the CLI reports it
  mirror     {"key", "entries", "catch_up"?}     transcript lines to store durably (the SDK's
                                                 SessionStore.append, handed to the function);
                                                 catch_up: entries of an earlier turn that
                                                 were never committed (see prepare)
  restore_needed {"session_id"}                  resume asked, no local transcript, no restore
                                                 given: nothing ran (exit status 3)
  text       {"text"}                            a streamed text delta
  thinking   {"text"}                            a streamed delta of the model's thinking
  tool_input_start {"id", "name"}                the model began writing a tool call
  tool_input_delta {"id", "delta"}               a piece of that call's input JSON, as written
  tool_use   {"id", "name", "input"}             the agent called a tool (the whole input)
  tool_result {"tool_use_id", "is_error", "output", "truncated"}   a tool answered: its output
                                                 (or error) as text, cut to TOOL_OUTPUT_LIMIT
                                                 characters (truncated says so)
  result     {"session_id", "text", "is_error", "subtype", "errors", "usage", "cost_usd", "num_turns",
              "agent_ms"? (warm: the agent's time from the job to the result)}
  error      {"code", "message", "detail"}       the query could not run (exit status 1);
                                                 detail is the CLI's stderr, for logs only
(and, from the launcher before this program runs: needs_install {"missing"}, exit status 4).
SIGINT is the user's stop: warm, the launcher tells the agent, which interrupts the turn (the
CLI keeps what was said so far) and its result follows; one-shot, the process ends.
With AGENT_TRUST_SYSTEM_CA=1 the CLI and Python trust the system CA bundle (see trust_system_ca).
This program sees no storage credentials: it talks to the function only through its argv, the
job file and stdout. It depends on nothing but the standard library and claude-agent-sdk.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

ALLOWED_OPTIONS = (
    "model", "system_prompt", "allowed_tools", "disallowed_tools", "permission_mode", "max_turns",
    "thinking",
)
Emit = Callable[..., None]
# A tool's output is sent to the client cut to this many characters (README: "Tool output");
# the function cuts it again (lib/runner_lines.py), as it trusts nothing the sandbox prints.
TOOL_OUTPUT_LIMIT = 4000
TAIL_BLOCK = 64 * 1024  # the first read from the end of a local transcript (uncommitted)


def emit(kind: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"type": kind, **fields}) + "\n")
    sys.stdout.flush()


class MirrorStore:
    """The SDK's SessionStore, as far as this sandbox is concerned: every appended batch goes to
    the function (through `emit`, which the warm agent points at the current turn's caller);
    the sandbox holds no store credentials. `load` finds nothing, so the SDK resumes from the
    local transcript."""

    def __init__(self, out: Emit = emit) -> None:
        self.emit = out

    async def append(self, key: dict[str, Any], entries: list[Any]) -> None:
        self.emit("mirror", key=dict(key), entries=entries)

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


def uncommitted(path: Path, committed: str | None) -> list[dict[str, Any]] | None:
    """The local transcript's entries after the last committed one (`committed`, a uuid the
    function keeps), or None when the transcript is not intact: missing, emptied, garbled or
    cut before that entry. Read backwards from the end, a block at a time: a turn costs the
    tail, not the whole history (a long conversation is megabytes)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if not committed:
                return []
            start, block, marker = size, TAIL_BLOCK, committed.encode()
            while start > 0:
                start = max(0, start - block)
                block *= 2
                handle.seek(start)
                data = handle.read(size - start)
                if marker not in data:
                    continue
                if start > 0:  # its first line may be cut: the next read has it whole
                    data = data[data.find(b"\n") + 1:]
                tail = entries_after(data, committed)
                if tail is not None:
                    return tail
    except OSError:
        return None
    return None



def entries_after(data: bytes, uuid: str) -> list[dict[str, Any]] | None:
    """The JSON entries in `data` (lines) after the one whose uuid is `uuid`; None without it."""
    tail: list[dict[str, Any]] = []
    for line in reversed(data.decode("utf-8", errors="replace").splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash: the next turn's CLI rewrites past it
        if isinstance(entry, dict) and entry.get("uuid") == uuid:
            return tail[::-1]
        if isinstance(entry, dict):
            tail.append(entry)
    return None


async def prepare(job: dict[str, Any], out: Emit) -> str | None:
    """Restore the transcript if the job brings one; None (after saying restore_needed) when the
    session to resume has no intact local transcript. Returns the turn's cwd.

    Entries after the last committed one are what a turn whose function died before its commit
    wrote (mirror.py): they go to the function again, as a `catch_up` batch, so the durable copy
    has them before this turn adds to them."""
    cwd = job.get("cwd") or os.getcwd()
    if job.get("resume") and job.get("restore"):
        await restore(job, cwd)
    elif job.get("resume"):
        tail = uncommitted(local_transcript(cwd, job["resume"]), job.get("committed"))
        if tail is None:
            out("restore_needed", session_id=job["resume"])
            return None
        if any(entry.get("uuid") for entry in tail):
            from claude_agent_sdk import project_key_for_directory

            out("mirror", key={"project_key": project_key_for_directory(cwd),
                               "session_id": job["resume"]}, entries=tail, catch_up=True)
    return cwd


def client_options(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (job.get("options") or {}).items() if k in ALLOWED_OPTIONS and v}


def build_options(job: dict[str, Any], cwd: str, stderr_tail: deque[str],
                  store: MirrorStore) -> Any:
    from claude_agent_sdk import ClaudeAgentOptions

    options = client_options(job)
    if options.get("permission_mode") == "bypassPermissions" and os.geteuid() == 0:
        os.environ["IS_SANDBOX"] = "1"  # the CLI refuses to bypass permissions as root otherwise
    return ClaudeAgentOptions(
        resume=job.get("resume") or None,
        resume_session_at=(job.get("resume_at") or None) if job.get("resume") else None,
        resume_drops_turn=(job.get("drops_turn") or None) if job.get("resume_at") else None,
        cwd=cwd,
        include_partial_messages=True,
        session_store=store,
        session_store_flush="eager",  # mirror as the turn goes: a killed turn loses least
        stderr=stderr_tail.append,
        **options,
    )


def tool_output(content: Any) -> str:
    """A tool result's content as text: its text blocks joined, other blocks (images) named."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(block.get("text", "") if block.get("type") == "text"
                     else f"[{block.get('type', 'block')}]"
                     for block in content if isinstance(block, dict))


def clip(text: str, limit: int = TOOL_OUTPUT_LIMIT) -> tuple[str, bool]:
    """At most `limit` characters of a tool's output, and whether it was cut."""
    return (text[:limit], True) if len(text) > limit else (text, False)


class Translator:
    """Reports SDK messages as lines. Streamed content blocks are numbered per model message:
    it remembers which tool call each block index is, so the call's input JSON can be
    reported piece by piece as the model writes it."""

    def __init__(self, out: Emit) -> None:
        self.out = out
        self.tool_blocks: dict[int, str] = {}

    def __call__(self, message: Any) -> str | None:
        """Report one message; the session id once it is the turn's result."""
        from claude_agent_sdk import (
            AssistantMessage,
            ResultMessage,
            StreamEvent,
            SystemMessage,
            UserMessage,
        )

        if isinstance(message, SystemMessage) and message.subtype == "init":
            self.out("session", session_id=message.data.get("session_id"))
        elif isinstance(message, StreamEvent) and message.parent_tool_use_id is None:
            self.stream_event(message.event)
        elif isinstance(message, AssistantMessage):
            self.tool_uses(message.content)
        elif isinstance(message, UserMessage) and isinstance(message.content, list):
            self.tool_results(message.content)
        elif isinstance(message, ResultMessage):
            self.out("result", session_id=message.session_id, text=message.result or "",
                     is_error=message.is_error, subtype=message.subtype,
                     errors=message.errors or [], usage=message.usage or {},
                     cost_usd=message.total_cost_usd, num_turns=message.num_turns)
            return message.session_id
        return None

    def stream_event(self, event: dict[str, Any]) -> None:
        """Text, thinking and tool input as the model produces them (the Messages API's
        streaming events, passed on by the CLI with include_partial_messages)."""
        kind, index = event.get("type"), event.get("index")
        if kind == "message_start":
            self.tool_blocks.clear()
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use" and block.get("id"):
                self.tool_blocks[index] = block["id"]
                self.out("tool_input_start", id=block["id"], name=block.get("name") or "tool")
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                self.out("text", text=delta.get("text", ""))
            elif delta.get("type") == "thinking_delta":
                self.out("thinking", text=delta.get("thinking", ""))
            elif delta.get("type") == "input_json_delta" and index in self.tool_blocks:
                self.out("tool_input_delta", id=self.tool_blocks[index],
                         delta=delta.get("partial_json", ""))

    def tool_uses(self, content: list[Any]) -> None:
        from claude_agent_sdk import ToolUseBlock

        for block in content:
            if isinstance(block, ToolUseBlock):
                self.out("tool_use", id=block.id, name=block.name, input=block.input)

    def tool_results(self, content: list[Any]) -> None:
        from claude_agent_sdk import ToolResultBlock

        for block in content:
            if isinstance(block, ToolResultBlock):
                output, truncated = clip(tool_output(block.content))
                self.out("tool_result", tool_use_id=block.tool_use_id,
                         is_error=bool(block.is_error), output=output, truncated=truncated)


def report_failure(out: Emit, error: BaseException, stderr_tail: deque[str]) -> None:
    detail = " | ".join(line.strip() for line in stderr_tail if line.strip())
    out("error", code="agent_failed", message=f"{type(error).__name__}: {error}"[:1000],
        detail=detail[-2000:])


async def one_shot(job: dict[str, Any]) -> int:
    from claude_agent_sdk import query

    stderr_tail: deque[str] = deque(maxlen=20)
    finished = None
    try:
        cwd = await prepare(job, emit)
        if cwd is None:
            return 3
        options = build_options(job, cwd, stderr_tail, MirrorStore())
        translate = Translator(emit)
        async for message in query(prompt=job["prompt"], options=options):
            finished = translate(message) or finished
    except Exception as error:  # report, never hang: the function maps this to a clear error
        report_failure(emit, error, stderr_tail)
        return 1
    if not finished:
        emit("error", code="agent_failed", message="the agent ended without a result")
        return 1
    return 0


# the warm agent ---------------------------------------------------------------------------------
class WarmSession:
    def __init__(self, key: str, client: Any, store: MirrorStore, stderr_tail: deque[str]) -> None:
        self.key, self.client, self.store, self.stderr_tail = key, client, store, stderr_tail


class WarmAgent:
    def __init__(self, idle: float) -> None:
        self.idle = idle
        self.sessions: dict[str, WarmSession] = {}
        self.current: WarmSession | None = None  # the session of the running turn
        self.lock = asyncio.Lock()
        self.last_turn = time.monotonic()
        self.home = os.environ.get("HOME", "")

    async def serve(self, address: str) -> None:
        # A job is one line; a restore can make it megabytes (the default limit is 64 KiB).
        server = await asyncio.start_unix_server(self.handle, path=address, limit=1 << 28)
        pid_file = Path(self.home) / ".agent-runner" / "warm-agent.pid"
        pid_file.write_text(str(os.getpid()))  # how a local sandbox's `stop` finds us
        async with server:
            while os.path.isdir(self.home) and (
                    self.lock.locked() or time.monotonic() - self.last_turn < self.idle):
                await asyncio.sleep(1)
        for session_id in list(self.sessions):
            await self.discard(session_id)
        with contextlib.suppress(OSError):
            pid_file.unlink()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = 0.0  # set once the turn holds the agent's lock
        answered = False  # the result is out: the caller may go (the launcher does at once)

        def out(kind: str, **fields: Any) -> None:
            nonlocal answered
            if kind == "result":  # how long the agent took, for the function's timings
                fields["agent_ms"] = round((time.perf_counter() - started) * 1000, 1)
                answered = True
            writer.write((json.dumps({"type": kind, **fields}) + "\n").encode())

        async with self.lock:
            started = time.perf_counter()
            self.last_turn = time.monotonic()
            try:
                job = json.loads(await reader.readline())
                turn = asyncio.create_task(self.turn(job, out, writer))
                gone = asyncio.create_task(self.listen(reader))  # ends: the caller went away
                done, _ = await asyncio.wait({turn, gone}, return_when=asyncio.FIRST_COMPLETED)
                if turn not in done and answered:  # the turn only has to tidy up
                    await asyncio.wait({turn})
                elif turn not in done:
                    turn.cancel()
                    with contextlib.suppress(BaseException):
                        await turn
                elif turn.exception() is not None:  # e.g. the SDK is not installed
                    raise turn.exception()  # type: ignore[misc]
                gone.cancel()
            except Exception as error:
                out("error", code="agent_failed",
                    message=f"warm agent: {type(error).__name__}: {error}"[:1000])
            finally:
                self.last_turn = time.monotonic()
                self.current = None
                with contextlib.suppress(Exception):
                    await writer.drain()
                    writer.close()

    async def listen(self, reader: asyncio.StreamReader) -> None:
        """What the caller says after the job: `interrupt` (the user's stop) interrupts the
        running turn, which then ends with its result; EOF means the caller went away."""
        while line := await reader.readline():
            if line.strip() == b"interrupt" and self.current is not None:
                with contextlib.suppress(Exception):
                    await self.current.client.interrupt()

    async def turn(self, job: dict[str, Any], out: Emit, writer: asyncio.StreamWriter) -> None:
        from claude_agent_sdk import ClaudeSDKClient

        if job.get("cwd"):  # a backend that calls the agent directly skips the launcher's mkdir
            os.makedirs(job["cwd"], exist_ok=True)
        cwd = await prepare(job, out)
        if cwd is None:
            return
        key = json.dumps([cwd, client_options(job)], sort_keys=True)
        resume = job.get("resume")
        warm = self.sessions.get(resume) if resume else None
        if warm and (warm.key != key or job.get("restore") or job.get("resume_at")):
            await self.discard(resume)
            warm = None
        if warm is None:
            tail: deque[str] = deque(maxlen=20)
            store = MirrorStore(out)
            client = ClaudeSDKClient(build_options(job, cwd, tail, store))
            warm = WarmSession(key, client, store, tail)
            await client.connect()
        warm.store.emit = out
        self.current = warm
        finished = None
        translate = Translator(out)
        try:
            await warm.client.query(job["prompt"])
            async for message in warm.client.receive_response():
                finished = translate(message) or finished
                await writer.drain()
        except BaseException as error:  # cancelled (caller gone) or broken: never reuse it
            if resume:
                self.sessions.pop(resume, None)
            asyncio.get_running_loop().create_task(self.close(warm))
            if isinstance(error, Exception):
                report_failure(out, error, warm.stderr_tail)
                return
            raise
        if not finished:
            out("error", code="agent_failed", message="the agent ended without a result")
            await self.close(warm)
            return
        if resume and resume != finished:
            self.sessions.pop(resume, None)
        self.sessions[finished] = warm

    async def discard(self, session_id: str) -> None:
        warm = self.sessions.pop(session_id, None)
        if warm is not None:
            await self.close(warm)

    @staticmethod
    async def close(warm: WarmSession) -> None:
        with contextlib.suppress(Exception):
            await warm.client.disconnect()


def listening(address: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(address)
            return True
        except OSError:
            return False


def start_agent(name: str) -> int:
    """Start the warm agent at the abstract socket `name`, detached from this process, and wait
    for it to listen (the launcher then relays turns to it)."""
    log = Path(os.environ.get("HOME", ".")) / ".agent-runner" / "warm-agent.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as stderr:
        subprocess.Popen([sys.executable, __file__, "--serve", name], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if listening("\0" + name):
            return 0
        time.sleep(0.05)
    return 1


def read_job(args: list[str]) -> dict[str, Any]:
    """The job from `--job BASE64` or `--job-file PATH` (deleted once read: the prompt need
    not outlive the turn on the sandbox's disk)."""
    if len(args) != 2 or args[0] not in ("--job", "--job-file"):
        raise ValueError("usage: agent_runner.py (--job BASE64 | --job-file PATH)")
    if args[0] == "--job":
        job = json.loads(base64.b64decode(args[1], validate=True))
    else:
        with open(args[1], encoding="utf-8") as handle:
            job = json.load(handle)
        os.remove(args[1])
    if not isinstance(job, dict) or not isinstance(job.get("prompt"), str):
        raise ValueError("job has no prompt")
    return job


# Debian/Ubuntu (the default `universal` image), Amazon Linux (the legacy runtimes), others.
SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                     "/etc/ssl/cert.pem")


def trust_system_ca(env: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """With AGENT_TRUST_SYSTEM_CA=1 (Vercel Sandbox injecting the key): the sandbox's firewall
    intercepts TLS to the model's host, with a CA it adds to the system trust store. The CLI
    (Node) and Python keep CA lists of their own: point both at the system bundle, unless the
    sandbox already set them."""
    if env.get("AGENT_TRUST_SYSTEM_CA") != "1":
        return
    bundle = next((path for path in SYSTEM_CA_BUNDLES if os.path.isfile(path)), None)
    if bundle:
        env.setdefault("NODE_EXTRA_CA_CERTS", bundle)
        env.setdefault("SSL_CERT_FILE", bundle)


def main(argv: list[str]) -> int:
    trust_system_ca()
    if len(argv) == 3 and argv[1] == "--serve":
        asyncio.run(WarmAgent(float(os.environ.get("AGENT_WARM_IDLE") or 300)).serve(
            "\0" + argv[2]))
        return 0
    if len(argv) == 3 and argv[1] == "--start-agent":
        return start_agent(argv[2])
    args = argv[1:-1] if argv[-1:] == ["--warm"] else argv[1:]  # the agent was not reachable
    try:
        job = read_job(args)
    except (OSError, ValueError) as error:  # binascii.Error is a ValueError
        emit("error", code="bad_job", message=str(error))
        return 2
    return asyncio.run(one_shot(job))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
