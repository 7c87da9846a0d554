"""The turn's one command: the launcher checks the installation inside it and the job travels in
it. Run for real with this Python, in a local sandbox folder."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lib import runner_lines
from lib.runner import LAUNCHER, NEEDS_INSTALL, PYTHON_FLAGS, RUNNER_SOURCE_PATH, agent_address
from lib.runner.agent_runner import TOOL_OUTPUT_LIMIT, Translator, read_job, trust_system_ca


def launch(tmp_path: Path, *args: str, marker: str = "", want: str = "",
           runner: Path | None = None) -> subprocess.CompletedProcess:
    runner = runner or tmp_path / "home" / ".agent-runner" / "agent_runner.py"
    return subprocess.run(
        [sys.executable, PYTHON_FLAGS, "-c", LAUNCHER, str(runner), str(tmp_path / "work"), marker,
         want, *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
        env={"CLAUDE_CONFIG_DIR": str(tmp_path / "home" / ".claude"), "PATH": "/usr/bin:/bin"},
    )


def test_a_missing_runner_is_reported_not_crashed_on(tmp_path: Path):
    done = launch(tmp_path, "--job", "e30=")
    assert done.returncode == NEEDS_INSTALL
    assert json.loads(done.stdout) == {"type": "needs_install", "missing": ["runner"]}


def test_a_marker_that_does_not_match_means_the_agent_sdk_is_missing(tmp_path: Path):
    marker = tmp_path / "installed"
    marker.write_text("claude-agent-sdk==0.1.0")
    done = launch(tmp_path, marker=str(marker), want="claude-agent-sdk==0.2.189",
                  runner=RUNNER_SOURCE_PATH)
    assert done.returncode == NEEDS_INSTALL
    assert json.loads(done.stdout)["missing"] == ["agent"]
    marker.unlink()
    assert json.loads(launch(tmp_path, marker=str(marker), want="x").stdout)["missing"] == [
        "runner", "agent"]


def test_when_installed_it_enters_the_workdir_and_runs_the_runner(tmp_path: Path):
    runner = tmp_path / "runner.py"
    runner.write_text("import os, sys\nprint(os.getcwd(), sys.argv[1:], __name__)\nsys.exit(7)\n")
    marker = tmp_path / "installed"
    marker.write_text("sdk==1")
    done = launch(tmp_path, "--job", "abc", "--warm", marker=str(marker), want="sdk==1",
                  runner=runner)
    assert done.returncode == 7, done.stderr
    assert done.stdout.strip() == f"{tmp_path / 'work'} ['--job', 'abc', '--warm'] __main__"
    assert (tmp_path / "home" / ".claude").is_dir()


def test_a_bad_job_is_a_clear_error_line(tmp_path: Path):
    done = launch(tmp_path, "--job", "not base64!", runner=RUNNER_SOURCE_PATH)
    assert done.returncode == 2
    assert json.loads(done.stdout.splitlines()[-1])["code"] == "bad_job"


def test_jobs_come_from_the_command_or_from_a_file_read_once(tmp_path: Path):
    job = {"prompt": "héllo", "resume": None}
    assert read_job(["--job", base64.b64encode(json.dumps(job).encode()).decode()]) == job
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    assert read_job(["--job-file", str(path)]) == job
    assert not path.exists()  # the prompt does not outlive the turn on the sandbox's disk
    with pytest.raises(ValueError):
        read_job(["--job", base64.b64encode(b'{"no": "prompt"}').decode()])
    with pytest.raises(ValueError):
        read_job(["job.json"])


def test_the_system_ca_is_trusted_only_when_asked(tmp_path: Path, monkeypatch):
    bundle = tmp_path / "ca-certificates.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr("lib.runner.agent_runner.SYSTEM_CA_BUNDLES", ("/nonexistent", str(bundle)))
    env: dict[str, str] = {}
    trust_system_ca(env)
    assert env == {}
    env = {"AGENT_TRUST_SYSTEM_CA": "1"}
    trust_system_ca(env)
    assert env["NODE_EXTRA_CA_CERTS"] == str(bundle) and env["SSL_CERT_FILE"] == str(bundle)
    env = {"AGENT_TRUST_SYSTEM_CA": "1", "NODE_EXTRA_CA_CERTS": "/sandbox/own-ca.pem"}
    trust_system_ca(env)
    assert env["NODE_EXTRA_CA_CERTS"] == "/sandbox/own-ca.pem"  # the sandbox's own wins


FAKE_AGENT_RUNNER = '''
import json, os, socket, sys, time
if sys.argv[1:2] == ["--start-agent"]:  # what the launcher asks when no agent listens
    server = socket.socket(socket.AF_UNIX)
    server.bind("\\0" + sys.argv[2])
    server.listen(1)
    if os.fork() == 0:  # the agent, listening before the launcher connects again
        conn, _ = server.accept()
        lines = conn.makefile("rb")
        job = json.loads(lines.readline())
        big = "x" * 200_000  # a line longer than one read
        conn.sendall(json.dumps({"type": "mirror", "entries": [{"big": big}],
                                 "job": job}).encode() + b"\\n")
        said = lines.readline()  # the launcher's SIGINT, relayed
        conn.sendall(json.dumps({"type": "result", "said": said.decode()}).encode() + b"\\n")
        time.sleep(5)  # an agent that keeps the connection open: the result line ends the turn
        os._exit(0)
    sys.exit(0)
print(json.dumps({"type": "one-shot", "argv": sys.argv[1:]}))
'''


def test_a_warm_turn_is_relayed_by_the_launcher_itself(tmp_path: Path):
    """No agent listens: the launcher has the runner start one, reads the job file once, hands
    the job (with the turn's cwd) over the socket, relays every byte, turns a SIGINT into
    `interrupt`, and ends with the agent's result line, whatever the agent does next."""
    runner = tmp_path / "home" / ".agent-runner" / "agent_runner.py"
    runner.parent.mkdir(parents=True)
    runner.write_text(FAKE_AGENT_RUNNER)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"prompt": "hi", "resume": None}))
    process = subprocess.Popen(
        [sys.executable, PYTHON_FLAGS, "-c", LAUNCHER, str(runner), str(tmp_path / "work"), "", "",
         "--job-file", str(job_file), "--warm"], cwd=tmp_path, stdout=subprocess.PIPE,
        env={"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"})
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())
    assert first["type"] == "mirror" and len(first["entries"][0]["big"]) == 200_000
    assert first["job"] == {"cwd": str(tmp_path / "work"), "prompt": "hi", "resume": None}
    assert not job_file.exists()  # read once
    process.send_signal(signal.SIGINT)
    last = json.loads(process.stdout.readline())
    assert process.wait(timeout=3) == 0  # not waiting for the agent to hang up
    assert last == {"type": "result", "said": "interrupt\n"}


def test_without_an_agent_the_turn_runs_one_shot_with_its_job(tmp_path: Path):
    runner = tmp_path / "runner.py"
    runner.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")  # starts no agent
    done = launch(tmp_path, "--job", base64.b64encode(b'{"prompt": "p"}').decode(), "--warm",
                  runner=runner)
    assert json.loads(done.stdout.splitlines()[-1]) == [
        "--job", base64.b64encode(b'{"prompt": "p"}').decode(), "--warm"]


def test_tool_calls_thinking_and_tool_output_become_lines_the_function_accepts():
    from claude_agent_sdk import (
        AssistantMessage,
        StreamEvent,
        ToolResultBlock,
        ToolUseBlock,
        UserMessage,
    )

    lines: list[dict] = []
    translate = Translator(lambda kind, **fields: lines.append({"type": kind, **fields}))

    def event(body: dict, parent: str | None = None) -> StreamEvent:
        return StreamEvent(uuid="u", session_id="s", event=body, parent_tool_use_id=parent)

    for body in (
        {"type": "message_start", "message": {}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "Hmm."}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "signature_delta", "signature": "x"}},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "tu1", "name": "Read", "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"file_path":'}},
        {"type": "content_block_delta", "index": 7,  # a block that is no tool call
         "delta": {"type": "input_json_delta", "partial_json": "?"}},
    ):
        translate(event(body))
    translate(event({"type": "content_block_delta", "index": 0,  # a subagent's: not ours
                     "delta": {"type": "text_delta", "text": "sub"}}, parent="tu0"))
    translate(AssistantMessage(content=[ToolUseBlock("tu1", "Read", {"file_path": "a"})],
                               model="m"))
    translate(UserMessage(content=[
        ToolResultBlock("tu1", [{"type": "text", "text": "a" * 5000}, {"type": "image"}]),
        ToolResultBlock("tu2", "denied", is_error=True), ToolResultBlock("tu3", None)]))
    assert lines[:4] == [
        {"type": "thinking", "text": "Hmm."},
        {"type": "tool_input_start", "id": "tu1", "name": "Read"},
        {"type": "tool_input_delta", "id": "tu1", "delta": '{"file_path":'},
        {"type": "tool_use", "id": "tu1", "name": "Read", "input": {"file_path": "a"}}]
    results = lines[4:]
    assert [(r["tool_use_id"], r["is_error"], r["truncated"]) for r in results] == [
        ("tu1", False, True), ("tu2", True, False), ("tu3", False, False)]
    assert results[0]["output"] == "a" * TOOL_OUTPUT_LIMIT
    assert [r["output"] for r in results[1:]] == ["denied", ""]
    assert TOOL_OUTPUT_LIMIT == runner_lines.TOOL_OUTPUT_LIMIT == 4000  # the README's figure
    for sent in lines:  # every line passes the function's checks, unchanged
        assert runner_lines.parse(json.dumps(sent)) == sent


def test_the_function_finds_the_agent_where_the_launcher_puts_it(tmp_path: Path):
    """`agent_address` (the function's side, for backends that reach the socket themselves)
    names the socket the launcher has the runner start the agent on."""
    runner = tmp_path / "home" / ".agent-runner" / "agent_runner.py"
    runner.parent.mkdir(parents=True)
    runner.write_text("import pathlib, sys\n"
                      "if sys.argv[1] == '--start-agent':\n"
                      f"    pathlib.Path({str(tmp_path / 'name')!r}).write_text(sys.argv[2])\n")
    env = {"HOME": str(tmp_path / "home"), "CLAUDE_CONFIG_DIR": str(tmp_path / "home" / ".claude"),
           "ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "ANTHROPIC_API_KEY": "k", "PATH": "/usr/bin:/bin"}
    job = base64.b64encode(b'{"prompt": "p"}').decode()
    subprocess.run([sys.executable, PYTHON_FLAGS, "-c", LAUNCHER, str(runner), str(tmp_path / "work"),
                    "", "", "--job", job, "--warm"], env=env, cwd=tmp_path, check=True)
    assert (tmp_path / "name").read_text() == agent_address(str(runner), env)
    assert agent_address(str(runner), {**env, "ANTHROPIC_API_KEY": "other"}) != agent_address(
        str(runner), env)  # another key, another agent


def test_uncommitted_entries_are_read_from_the_end_as_from_the_whole_file(tmp_path: Path,
                                                                        monkeypatch):
    """The catch-up reads the transcript backwards a block at a time; whatever the block size
    and wherever the committed entry is, it finds what reading the whole file finds."""
    import random

    from lib.runner import agent_runner

    rng = random.Random(14)
    path = tmp_path / "session.jsonl"
    assert agent_runner.uncommitted(path, "u1") is None  # no transcript
    for case in range(200):
        entries = [{"uuid": f"u{i}", "parentUuid": f"u{i - 1}", "text": "x" * rng.randrange(300)}
                   for i in range(rng.randrange(1, 40))]
        lines = [json.dumps(entry) for entry in entries]
        if rng.random() < 0.3:  # a line cut by a crash, somewhere
            lines.insert(rng.randrange(len(lines) + 1), '{"uuid": "cut", "te')
        path.write_text("\n".join(lines) + "\n")
        committed = rng.choice([f"u{rng.randrange(len(entries) + 2)}", None])
        whole = agent_runner.entries_after(path.read_bytes(), committed) if committed else []
        monkeypatch.setattr(agent_runner, "TAIL_BLOCK", rng.choice([16, 100, 1000, 1 << 16]))
        assert agent_runner.uncommitted(path, committed) == whole, case
    path.write_text("")
    assert agent_runner.uncommitted(path, "u1") is None  # emptied


def test_secrets_are_redacted_across_the_deltas_of_each_stream():
    """However a block's text (a stream: the text, the thinking, a tool call's input) is cut
    into deltas, with lines the client does not see in between, what its pieces join to is
    the text with the secrets redacted; and the blocks come out in order."""
    import random

    rng = random.Random(15)
    secrets = ("sk-ant-0123456789abcdef", "tok_AAAA")
    words = ["sk-", "sk-ant-0", "tok_", "s", "hello ", "tok_AAAA", "sk-ant-0123456789abcdef", "k"]
    kinds = [("text", None), ("thinking", None), ("tool_input_delta", "t1")]
    for case in range(300):
        lines, blocks = [], []
        for _ in range(rng.randrange(1, 6)):
            kind, call = rng.choice(kinds)
            text = "".join(rng.choice(words) for _ in range(rng.randrange(1, 6)))
            blocks.append(runner_lines.redact(text, secrets))
            inner = rng.sample(range(1, len(text)), min(len(text) - 1, rng.randrange(5)))
            cuts = [*sorted(inner), len(text)]
            for start, end in zip([0, *cuts], cuts, strict=False):
                field = runner_lines.DELTAS[kind]
                lines.append(json.dumps({"type": kind, field: text[start:end],
                                         **({"id": call} if call else {})}))
                if rng.random() < 0.3:  # unseen by the client: ends no stream
                    lines.append(json.dumps({"type": "session", "session_id": "s"}))
            lines.append(json.dumps({"type": "tool_input_start", "id": "t2", "name": "x"}))
        got = [""]
        for message in runner_lines.messages(lines, secrets):
            assert message is not None
            if message["type"] == "tool_input_start":  # the block before it is complete
                got.append("")
            elif message["type"] in runner_lines.DELTAS:
                piece = message[runner_lines.DELTAS[message["type"]]]
                assert piece, case  # nothing empty goes out
                got[-1] += piece
        assert got[:-1] == blocks, case


def test_a_secret_spelled_with_json_escapes_is_redacted_too():
    secret = "sk-ant-0123456789abcdef"
    spelled = "".join(f"\\u{ord(c):04x}" for c in secret)  # what json.loads decodes to it
    message = runner_lines.parse('{"type": "text", "text": "key: ' + spelled + '\\n"}', (secret,))
    assert message == {"type": "text", "text": "key: [redacted]\n"}
