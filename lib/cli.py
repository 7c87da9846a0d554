"""A terminal client for the API: chat with streamed answers, list and fork conversations.

    python -m lib.cli chat "Hello"          one turn, the answer printed as it streams
    python -m lib.cli chat                  a conversation: one turn per line you type
    python -m lib.cli --chat work chat "Hi" a turn of the conversation `work` (AGENT_CHAT)
    python -m lib.cli chats                 your conversations, newest first
    python -m lib.cli history [--ids]       the conversation so far (with message ids)
    python -m lib.cli fork MESSAGE_ID [--as NEW_ID]   a new conversation ending at a message
    python -m lib.cli show | reset          you as a whole (with --chat: that conversation) |
                                            forget everything

AGENT_URL (default http://127.0.0.1:3000) is the deployment; AGENT_TOKEN a JWT, or AGENT_USER
a user id for AUTH_MODE=dev. Without --chat, the `default` conversation. The answer goes to
stdout; the agent's tool calls (name, short input, one line of output), its thinking and notices
go to stderr. Not deployed: it needs `requests`, which the functions do not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import requests


class ApiError(Exception):
    pass


class Client:
    def __init__(self, url: str, token: str | None, user: str | None, timeout: float = 330) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {"X-User-Id": user or ""}
        self.timeout = timeout

    def _check(self, response: requests.Response) -> requests.Response:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            retry = response.headers.get("Retry-After")
            raise ApiError(f"HTTP {response.status_code} {message}"
                           + (f" (retry in {retry} s)" if retry else ""))
        return response

    def chat(self, prompt: str, chat: str | None = None) -> Iterator[dict[str, Any]]:
        """The parts of the UI message stream, as they arrive."""
        body = {"prompt": prompt, **({"chat_id": chat} if chat else {})}
        response = self._check(requests.post(
            f"{self.url}/api/chat", json=body, stream=True, timeout=self.timeout,
            headers={**self.headers, "Accept": "text/event-stream"}))
        with response:
            for line in response.iter_lines(decode_unicode=True):
                if line and line.startswith("data: ") and line != "data: [DONE]":
                    yield json.loads(line[len("data: "):])

    def get(self, path: str) -> Any:
        return self._check(requests.get(f"{self.url}{path}", headers=self.headers,
                                        timeout=30)).json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._check(requests.post(f"{self.url}{path}", json=body, headers=self.headers,
                                         timeout=60)).json()

    def stop(self, chat: str | None) -> None:
        """Ask the server to stop the chat's running turn (it keeps what it said)."""
        self._check(requests.post(f"{self.url}/api/chat/{chat or 'default'}/stop",
                                  headers=self.headers, timeout=30))

    def reset(self) -> None:
        self._check(requests.delete(f"{self.url}/api/session", headers=self.headers, timeout=60))


def one_line(value: Any, limit: int = 100) -> str:
    """A value on one short line: JSON unless it is text, whitespace folded, cut with `…`."""
    text = " ".join((value if isinstance(value, str) else json.dumps(value)).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def activity(part: dict[str, Any]) -> str | None:
    """What `err` shows of a tool or thinking part, compactly: a call as its name and short
    input, its result as one line (marked when the server cut it), thinking as it streams."""
    kind = part.get("type")
    if kind == "tool-input-available":
        return f"\n[tool {part.get('toolName')}] {one_line(part.get('input'))}\n"
    if kind == "tool-output-available":
        output = part.get("output") or {}
        cut = " [truncated]" if output.get("truncated") else ""
        return f"  -> {one_line(output.get('text', output))}{cut}\n"
    if kind == "tool-output-error":
        return f"  -> error: {one_line(part.get('errorText', ''))}\n"
    if kind == "reasoning-start":
        return "\n[thinking] "
    if kind == "reasoning-delta":
        return part.get("delta", "")
    if kind == "reasoning-end":
        return "\n"
    return None


def print_turn(client: Client, prompt: str, out: TextIO, err: TextIO,
               chat: str | None = None) -> bool:
    """Print the answer as it streams; tools, thinking and notices go to `err`. True if it
    finished. Ctrl-C stops the turn on the server too (what the agent said so far is kept)."""
    finished = False
    try:
        for part in client.chat(prompt, chat):
            kind = part.get("type")
            shown = activity(part)
            if shown is not None:
                err.write(shown)
                err.flush()
            elif kind == "text-delta":
                out.write(part["delta"])
                out.flush()
            elif kind == "data-notice":
                err.write(f"\n[{part['data']['code']}] {part['data']['message']}\n")
            elif kind == "data-error":
                err.write(f"\nerror: {part['data']['code']}: {part['data']['message']}\n")
            elif kind == "finish" and part.get("finishReason") != "error":
                finished = True
    except KeyboardInterrupt:
        client.stop(chat)
        err.write("\n[stopped: what the agent said so far is kept]\n")
    out.write("\n")
    return finished


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.cli", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("AGENT_URL", "http://127.0.0.1:3000"))
    parser.add_argument("--token", default=os.environ.get("AGENT_TOKEN"))
    parser.add_argument("--user", default=os.environ.get("AGENT_USER", "cli-user"))
    parser.add_argument("--chat", default=os.environ.get("AGENT_CHAT"),
                        help="the conversation (default: the `default` one)")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="send a prompt (or chat line by line)")
    chat.add_argument("prompt", nargs="*")
    commands.add_parser("chats", help="your conversations, newest first")
    commands.add_parser("show", help="you as a whole, or with --chat that conversation")
    history = commands.add_parser("history", help="the conversation so far")
    history.add_argument("--ids", action="store_true", help="show each message's id")
    fork = commands.add_parser("fork", help="a new conversation whose history ends at a message")
    fork.add_argument("message_id")
    fork.add_argument("--as", dest="new_chat", help="the new conversation's id")
    commands.add_parser("reset", help="forget every conversation")
    args = parser.parse_args(argv)
    client = Client(args.url, args.token, args.user)
    named = args.chat or "default"
    try:
        if args.command == "chat" and args.prompt:
            return 0 if print_turn(client, " ".join(args.prompt), out, err, args.chat) else 1
        if args.command == "chat":
            for line in sys.stdin:
                if line.strip():
                    print_turn(client, line.strip(), out, err, args.chat)
            return 0
        if args.command == "chats":
            for chat in client.get("/api/chats?limit=100")["chats"]:
                out.write(f"{chat['id']}\t{chat['turns']} turns\t{chat['title']}\n")
        elif args.command == "show":
            path = f"/api/chats/{args.chat}" if args.chat else "/api/session"
            out.write(json.dumps(client.get(path), indent=2) + "\n")
        elif args.command == "history":
            for message in client.get(f"/api/chats/{named}/messages?limit=200")["messages"]:
                prefix = f"[{message['id']}] " if args.ids else ""
                out.write(f"{prefix}{message['role']}: {message['text']}\n")
        elif args.command == "fork":
            body = {"message_id": args.message_id,
                    **({"chat_id": args.new_chat} if args.new_chat else {})}
            made = client.post(f"/api/chats/{named}/fork", body)
            out.write(f"{made['id']}\t{made['turns']} turns\t{made['title']}\n")
        elif args.command == "reset":
            client.reset()
            out.write("every conversation is forgotten\n")
        return 0
    except (ApiError, requests.RequestException) as error:
        err.write(f"error: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
