"""Transcripts in Upstash Redis, through the real `upstash-redis` client.

Per transcript (main, or one subagent `subpath`), with `<t>` = `<prefix>:tx:<project>:<session>`:
  <t>:m | <t>:s:<subpath>          list of entries, as JSON strings, in append order
  ...:n                            parallel list of each entry's byte length (plans paged reads)
  ...:u                            set of the `uuid`s stored (the idempotency key of a retried batch)
  <t>:subs                         set of the session's subpaths
  <prefix>:tx:<project>:idx        sorted set: session id -> last append (epoch ms)

Every append is one Lua script per chunk (dedup, push, index, TTL refresh: atomic), chunks sized
so no request exceeds `max_request_bytes`; reads are `LRANGE` pages planned from the lengths so
no answer exceeds it either. An entry too large for one request is stored as base64 pieces in
consecutive items (`\0part i/n ...`), its `uuid` checked with the last piece, so a retried
write leaves at most an incomplete run of pieces, which `load` skips. Every key's TTL is
refreshed on append (retention).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from urllib.parse import quote

from upstash_redis import Redis

from lib.state import call_safely
from lib.transcripts import Entry, SessionKey, SessionListEntry

# KEYS: entries, lengths, uuids, index, subs. ARGV: ttl s, now ms, session id, subpath ('' = main),
# then (uuid or '', entry json) pairs -> number of entries added
_APPEND = """#!lua flags=allow-key-locking
local ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local added = 0
for i = 5, #ARGV, 2 do
  if ARGV[i] == '' or redis.call('SADD', KEYS[3], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[i + 1])
    redis.call('RPUSH', KEYS[2], string.len(ARGV[i + 1]))
    added = added + 1
  end
end
if ARGV[4] == '' then
  redis.call('ZADD', KEYS[4], now, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (now - ttl * 1000))
else
  redis.call('SADD', KEYS[5], ARGV[4])
end
for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ttl) end
return added
"""

_LENGTHS_PAGE = 10_000  # lengths are short strings: 10k of them answer in well under 200 KB
_PART = "\0part "  # an item holding a piece of an entry too large for one request


def _decoded(items: list[str]) -> list[Entry]:
    """Entries from stored items, joining the pieces of large ones; an incomplete run of pieces
    (a write that failed and was retried) is skipped."""
    entries: list[Entry] = []
    pieces: list[str] = []
    for item in items:
        if not item.startswith(_PART):
            entries.append(json.loads(item))
            pieces = []
            continue
        header, piece = item[len(_PART):].split(" ", 1)
        index, total = (int(n) for n in header.split("/"))
        if index == 0:
            pieces = []
        if index != len(pieces):
            pieces = []
            continue
        pieces.append(piece)
        if len(pieces) == total:
            entries.append(json.loads(base64.b64decode("".join(pieces))))
            pieces = []
    return entries


def _b64_size(n: int) -> int:
    return 4 * ((n + 2) // 3)


def _arg_size(arg: str) -> int:
    return len(json.dumps(arg)) + 1


class UpstashTranscripts:
    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int, max_request_bytes: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl_seconds
        self.max_request_bytes = max_request_bytes

    # keys ---------------------------------------------------------------------------------------
    def _project(self, project_key: str) -> str:
        return f"{self.prefix}:tx:{quote(project_key, safe='')}"

    def _session(self, key: SessionKey) -> str:
        return f"{self._project(key['project_key'])}:{quote(key['session_id'], safe='')}"

    def _entries_key(self, key: SessionKey) -> str:
        subpath = key.get("subpath")
        return f"{self._session(key)}:" + (f"s:{quote(subpath, safe='')}" if subpath else "m")

    def _transcript_keys(self, key: SessionKey) -> list[str]:
        entries = self._entries_key(key)
        return [entries, f"{entries}:n", f"{entries}:u"]

    # protocol -----------------------------------------------------------------------------------
    def append(self, key: SessionKey, entries: list[Entry]) -> None:
        keys = [*self._transcript_keys(key), f"{self._project(key['project_key'])}:idx",
                f"{self._session(key)}:subs"]
        head = [str(self.ttl), str(int(time.time() * 1000)), key["session_id"],
                key.get("subpath") or ""]
        for chunk in self._chunks(keys, head, entries):
            call_safely(lambda chunk=chunk: self.redis.eval(_APPEND, keys, head + chunk), attempts=2)

    def _chunks(self, keys: list[str], head: list[str], entries: list[Entry]) -> Iterator[list[str]]:
        """Split the entries into argument lists whose whole request fits `max_request_bytes`."""
        fixed = len(json.dumps(["EVAL", _APPEND, str(len(keys)), *keys, *head]))
        chunk: list[str] = []
        size = fixed
        for entry in entries:
            for pair in self._items(fixed, entry):
                pair_size = sum(map(_arg_size, pair))
                if chunk and size + pair_size > self.max_request_bytes:
                    yield chunk
                    chunk, size = [], fixed
                chunk += pair
                size += pair_size
        if chunk:
            yield chunk

    def _items(self, fixed: int, entry: Entry) -> Iterator[list[str]]:
        """(uuid, item) pairs for one entry: itself, or base64 pieces, each small enough to be
        written in one request and read back (base64-encoded by Upstash) in one answer."""
        uuid = str(entry.get("uuid") or "")
        text = json.dumps(entry, separators=(",", ":"))
        answer_room = (self.max_request_bytes - 64) * 3 // 4 - 3  # raw bytes whose base64 fits
        request_room = self.max_request_bytes - fixed - _arg_size(uuid)
        if _arg_size(text) <= request_room and len(text.encode()) <= answer_room:
            yield [uuid, text]
            return
        encoded = base64.b64encode(text.encode()).decode()  # no JSON escaping: sizes are known
        room = min(request_room, answer_room) - 64  # the piece's header and quotes
        pieces = [encoded[i:i + room] for i in range(0, len(encoded), room)]
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            yield [uuid if last else "", f"{_PART}{index}/{len(pieces)} {piece}"]

    def load(self, key: SessionKey) -> list[Entry] | None:
        entries_key, lengths_key, _ = self._transcript_keys(key)
        lengths: list[int] = []
        while True:
            start = len(lengths)
            page = call_safely(lambda s=start: self.redis.lrange(
                lengths_key, s, s + _LENGTHS_PAGE - 1), attempts=2)
            lengths += [int(n) for n in page]
            if len(page) < _LENGTHS_PAGE:
                break
        if not lengths:
            return None
        items: list[str] = []
        for start, stop in self._pages(lengths):
            items += call_safely(lambda s=start, e=stop: self.redis.lrange(entries_key, s, e),
                                 attempts=2)
        return _decoded(items)

    def _pages(self, lengths: list[int]) -> Iterator[tuple[int, int]]:
        """Index ranges whose answer (base64 strings in a JSON array) fits `max_request_bytes`."""
        budget = self.max_request_bytes - 64
        start, size = 0, 0
        for index, length in enumerate(lengths):
            item = _b64_size(length) + 3
            if size + item > budget and index > start:
                yield start, index - 1
                start, size = index, 0
            size += item
        yield start, len(lengths) - 1

    def list_sessions(self, project_key: str) -> list[SessionListEntry]:
        index = f"{self._project(project_key)}:idx"
        oldest = int(time.time() * 1000) - self.ttl * 1000
        scored = call_safely(lambda: self.redis.zrange(index, oldest, "+inf", sortby="BYSCORE",
                                                       withscores=True), attempts=2)
        return [{"session_id": member, "mtime": int(score)} for member, score in scored]

    def list_subkeys(self, key: SessionKey) -> list[str]:
        subs = call_safely(lambda: self.redis.smembers(f"{self._session(key)}:subs"), attempts=2)
        return sorted(subs)

    def delete(self, key: SessionKey) -> None:
        if key.get("subpath"):
            doomed = self._transcript_keys(key)
            tx = self.redis.multi()
            tx.delete(*doomed)
            tx.srem(f"{self._session(key)}:subs", key["subpath"])
        else:
            subpaths = self.list_subkeys(key)
            doomed = self._transcript_keys(key) + [f"{self._session(key)}:subs"]
            for subpath in subpaths:
                doomed += self._transcript_keys({**key, "subpath": subpath})
            tx = self.redis.multi()
            tx.delete(*doomed)
            tx.zrem(f"{self._project(key['project_key'])}:idx", key["session_id"])
        call_safely(tx.exec, attempts=2)
