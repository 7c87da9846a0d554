"""The terminal client against recorded answers (responses mocks `requests`)."""

from __future__ import annotations

import io
import json

import responses

from lib.cli import main

URL = "http://agent.test"


def stream(*parts: dict) -> bytes:
    lines = [f"data: {json.dumps(part)}\n\n" for part in parts] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--url", URL, *argv], out, err)
    return code, out.getvalue(), err.getvalue()


@responses.activate
def test_chat_prints_the_streamed_answer_and_sends_identity():
    responses.post(f"{URL}/api/chat", content_type="text/event-stream", body=stream(
        {"type": "start"}, {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "Hello "},
        {"type": "tool-input-available", "toolCallId": "1", "toolName": "Read", "input": {}},
        {"type": "tool-output-available", "toolCallId": "1", "output": {"text": "a"}},
        {"type": "text-delta", "id": "t", "delta": "there"},
        {"type": "data-session", "data": {"session_id": "s", "turn": 1}}, {"type": "finish"}))
    code, out, err = run("--token", "jwt-token", "chat", "hi", "you")
    assert (code, out) == (0, "Hello there\n") and "[tool Read] {}\n  -> a\n" in err
    sent = responses.calls[0].request
    assert json.loads(sent.body) == {"prompt": "hi you"}
    assert sent.headers["Authorization"] == "Bearer jwt-token"
    assert sent.headers["Accept"] == "text/event-stream"


@responses.activate
def test_tools_and_thinking_are_shown_compactly_on_stderr():
    write = {"file_path": "/work/notes.txt", "content": "hello\n" * 40}
    responses.post(f"{URL}/api/chat", content_type="text/event-stream", body=stream(
        {"type": "reasoning-start", "id": "r"}, {"type": "reasoning-delta", "id": "r",
                                                 "delta": "Let me "},
        {"type": "reasoning-delta", "id": "r", "delta": "write it."},
        {"type": "reasoning-end", "id": "r"},
        {"type": "tool-input-start", "toolCallId": "1", "toolName": "Write", "dynamic": True},
        {"type": "tool-input-delta", "toolCallId": "1", "inputTextDelta": "{"},
        {"type": "tool-input-available", "toolCallId": "1", "toolName": "Write", "input": write,
         "dynamic": True},
        {"type": "tool-output-available", "toolCallId": "1", "dynamic": True,
         "output": {"text": "File created\nsuccessfully", "truncated": False}},
        {"type": "tool-input-available", "toolCallId": "2", "toolName": "Read",
         "input": {"file_path": "/work/big.txt"}, "dynamic": True},
        {"type": "tool-output-available", "toolCallId": "2", "dynamic": True,
         "output": {"text": "x" * 4000, "truncated": True}},
        {"type": "tool-input-available", "toolCallId": "3", "toolName": "Bash",
         "input": {"command": "rm -rf /"}, "dynamic": True},
        {"type": "tool-output-error", "toolCallId": "3", "errorText": "permission denied",
         "dynamic": True},
        {"type": "text-delta", "id": "t", "delta": "Done."}, {"type": "finish"}))
    code, out, err = run("chat", "write it")
    assert (code, out) == (0, "Done.\n")
    shown = err.strip().splitlines()
    assert shown[0] == "[thinking] Let me write it."
    assert shown[2].startswith('[tool Write] {"file_path": "/work/notes.txt", "content": "hello')
    assert shown[2].endswith("…") and len(shown[2]) == len("[tool Write] ") + 100
    assert shown[3] == "  -> File created successfully"
    assert shown[5:] == ['[tool Read] {"file_path": "/work/big.txt"}',
                         f"  -> {'x' * 99}… [truncated]", "",
                         '[tool Bash] {"command": "rm -rf /"}', "  -> error: permission denied"]


@responses.activate
def test_errors_are_reported_with_their_code_and_retry():
    responses.post(f"{URL}/api/chat", status=409, headers={"Retry-After": "2"},
                   json={"error": {"code": "turn_in_progress", "message": "busy"}})
    code, out, err = run("--user", "dev-user", "chat", "hi")
    assert code == 1 and "turn_in_progress: busy (retry in 2 s)" in err
    assert responses.calls[0].request.headers["X-User-Id"] == "dev-user"


@responses.activate
def test_a_failed_turn_in_the_stream_is_an_error():
    responses.post(f"{URL}/api/chat", content_type="text/event-stream", body=stream(
        {"type": "data-error", "data": {"code": "agent_failed", "message": "boom"}},
        {"type": "error", "errorText": "boom"}))
    code, _, err = run("chat", "hi")
    assert code == 1 and "agent_failed: boom" in err


@responses.activate
def test_show_history_and_reset():
    responses.get(f"{URL}/api/session", json={"chats": 1, "turns": 2})
    responses.get(f"{URL}/api/chats/default/messages?limit=200", json={"messages": [
        {"id": "u1", "role": "user", "text": "hi"},
        {"id": "m1", "role": "assistant", "text": "hello"}]})
    responses.delete(f"{URL}/api/session", status=204)
    assert json.loads(run("show")[1])["turns"] == 2
    assert run("history")[1] == "user: hi\nassistant: hello\n"
    assert run("history", "--ids")[1] == "[u1] user: hi\n[m1] assistant: hello\n"
    assert run("reset")[:2] == (0, "every conversation is forgotten\n")


@responses.activate
def test_conversations_are_named_listed_and_forked():
    responses.post(f"{URL}/api/chat", content_type="text/event-stream", body=stream(
        {"type": "text-delta", "id": "t", "delta": "ok"}, {"type": "finish"}))
    responses.get(f"{URL}/api/chats?limit=100", json={"chats": [
        {"id": "work", "turns": 3, "title": "Plans"}, {"id": "default", "turns": 1,
                                                       "title": "Hi"}]})
    responses.get(f"{URL}/api/chats/work", json={"id": "work", "turns": 3})
    responses.post(f"{URL}/api/chats/work/fork", status=201,
                   json={"id": "side", "turns": 1, "title": "Plans (fork)"})
    assert run("--chat", "work", "chat", "hi")[:2] == (0, "ok\n")
    assert json.loads(responses.calls[0].request.body) == {"prompt": "hi", "chat_id": "work"}
    assert run("chats")[1] == "work\t3 turns\tPlans\ndefault\t1 turns\tHi\n"
    assert json.loads(run("--chat", "work", "show")[1])["turns"] == 3
    assert run("--chat", "work", "fork", "m1", "--as", "side")[1] == "side\t1 turns\tPlans (fork)\n"
    assert json.loads(responses.calls[-1].request.body) == {"message_id": "m1", "chat_id": "side"}


@responses.activate
def test_ctrl_c_stops_the_turn_on_the_server():
    def interrupted(_request):
        raise KeyboardInterrupt

    responses.add_callback(responses.POST, f"{URL}/api/chat", callback=interrupted)
    responses.post(f"{URL}/api/chat/work/stop", status=202, json={"stopping": True})
    code, _, err = run("--chat", "work", "chat", "hi")
    assert code == 1 and "[stopped" in err
    assert responses.calls[-1].request.url == f"{URL}/api/chat/work/stop"
