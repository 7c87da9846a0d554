"""A terminal client for the API: chat with streamed answers, see or reset the session.

    python -m lib.cli chat "Hello"          one turn, the answer printed as it streams
    python -m lib.cli chat                  a conversation: one turn per line you type
    python -m lib.cli show | history | reset

AGENT_URL (default http://127.0.0.1:3000) is the deployment; AGENT_TOKEN a JWT, or AGENT_USER
a user id for AUTH_MODE=dev. Not deployed: it needs `requests`, which the functions do not.
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

    def chat(self, prompt: str) -> Iterator[dict[str, Any]]:
        """The parts of the UI message stream, as they arrive."""
        response = self._check(requests.post(
            f"{self.url}/api/chat", json={"prompt": prompt}, stream=True, timeout=self.timeout,
            headers={**self.headers, "Accept": "text/event-stream"}))
        with response:
            for line in response.iter_lines(decode_unicode=True):
                if line and line.startswith("data: ") and line != "data: [DONE]":
                    yield json.loads(line[len("data: "):])

    def get(self, path: str) -> Any:
        return self._check(requests.get(f"{self.url}{path}", headers=self.headers,
                                        timeout=30)).json()

    def reset(self) -> None:
        self._check(requests.delete(f"{self.url}/api/session", headers=self.headers, timeout=60))


def print_turn(client: Client, prompt: str, out: TextIO, err: TextIO) -> bool:
    """Print the answer as it streams; tools and notices go to `err`. True if it finished."""
    finished = False
    for part in client.chat(prompt):
        kind = part.get("type")
        if kind == "text-delta":
            out.write(part["delta"])
            out.flush()
        elif kind == "tool-input-available":
            err.write(f"\n[tool {part.get('toolName')}]\n")
        elif kind == "data-notice":
            err.write(f"\n[{part['data']['code']}] {part['data']['message']}\n")
        elif kind == "data-error":
            err.write(f"\nerror: {part['data']['code']}: {part['data']['message']}\n")
        elif kind == "finish":
            finished = True
    out.write("\n")
    return finished


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.cli", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("AGENT_URL", "http://127.0.0.1:3000"))
    parser.add_argument("--token", default=os.environ.get("AGENT_TOKEN"))
    parser.add_argument("--user", default=os.environ.get("AGENT_USER", "cli-user"))
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="send a prompt (or chat line by line)")
    chat.add_argument("prompt", nargs="*")
    commands.add_parser("show", help="the session record")
    commands.add_parser("history", help="the conversation so far")
    commands.add_parser("reset", help="forget the conversation")
    args = parser.parse_args(argv)
    client = Client(args.url, args.token, args.user)
    try:
        if args.command == "chat" and args.prompt:
            return 0 if print_turn(client, " ".join(args.prompt), out, err) else 1
        if args.command == "chat":
            for line in sys.stdin:
                if line.strip():
                    print_turn(client, line.strip(), out, err)
            return 0
        if args.command == "show":
            out.write(json.dumps(client.get("/api/session"), indent=2) + "\n")
        elif args.command == "history":
            for message in client.get("/api/session/messages?limit=200")["messages"]:
                out.write(f"{message['role']}: {message['text']}\n")
        elif args.command == "reset":
            client.reset()
            out.write("the conversation is forgotten\n")
        return 0
    except (ApiError, requests.RequestException) as error:
        err.write(f"error: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
