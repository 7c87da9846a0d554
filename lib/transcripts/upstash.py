"""Transcripts in Upstash Redis, through the real `upstash-redis` client.

Per transcript (main, or one subagent `subpath`), with `<t>` = `<prefix>:tx:<project>:<session>`:
  <t>:m | <t>:s:<subpath>          list of entries, as JSON strings, in append order
  ...:n                            parallel list of each entry's byte length (plans paged reads)
  ...:u                            set of the `uuid`s stored (the idempotency key of a retried batch)
  <t>:subs                         set of the session's subpaths
  <prefix>:tx:<project>:idx        sorted set: session id -> last append (epoch ms)
  <t>:sum                          hash: the session's summary (`summary.py`): `d:<SDK field>`,
                                   `prompt`, `mtime` (= its index score), values JSON
  <prefix>:tx:<project>:sums       hash: session id -> byte size of its summary (plans reads)

Every append is one Lua script per chunk (dedup, push, index, TTL refresh: atomic), chunks sized
so no request exceeds `max_request_bytes`; reads are `LRANGE` pages planned from the lengths so
no answer exceeds it either. An entry too large for one request is stored as base64 pieces in
consecutive items (`\0part i/n ...`), its `uuid` checked with the last piece, so a retried
write leaves at most an incomplete run of pieces, which `load` skips. Every key's TTL is
refreshed on append (retention).

Summaries are merged by the same append script (the last chunk of a main transcript's append
carries `summary.delta` of the whole batch: no extra request), so `list_session_summaries` is
one request for the index and the sizes, then one pipelined request per `max_request_bytes` of
summaries (each at most a few KB, typically a few hundred bytes), whatever the transcripts hold.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from urllib.parse import quote

from upstash_redis import Redis

from lib.state import call_safely
from lib.transcripts import Entry, Rider, SessionKey, SessionListEntry, SessionSummary, summary

# KEYS: entries, lengths, uuids, index, subs, summary, summary sizes. ARGV: ttl s, now ms,
# session id, subpath ('' = main), n, then n summary ops (op, field, value) (`summary.merge`),
# then (uuid or '', entry json) pairs -> number of entries added
_APPEND = """#!lua flags=allow-key-locking
local ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local ops = 6 + 3 * tonumber(ARGV[5])
local added = 0
for i = ops, #ARGV, 2 do
  if ARGV[i] == '' or redis.call('SADD', KEYS[3], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[i + 1])
    redis.call('RPUSH', KEYS[2], string.len(ARGV[i + 1]))
    added = added + 1
  end
end
if ARGV[4] == '' then
  redis.call('ZADD', KEYS[4], now, ARGV[3])
  local cutoff = '(' .. (now - ttl * 1000)
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', cutoff)) do
    redis.call('HDEL', KEYS[7], gone)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', cutoff)
else
  redis.call('SADD', KEYS[5], ARGV[4])
end
if ops > 6 then
  local locked = redis.call('HEXISTS', KEYS[6], 'd:first_prompt_locked') == 1
  for i = 6, ops - 1, 3 do
    local op = ARGV[i]
    if op == 'drop' then
      redis.call('HDEL', KEYS[6], ARGV[i + 1])
    elseif op == 'last' or (op == 'unlocked' and not locked) then
      redis.call('HSET', KEYS[6], ARGV[i + 1], ARGV[i + 2])
    elseif op == 'once' or (op == 'unlocked_once' and not locked) then
      redis.call('HSETNX', KEYS[6], ARGV[i + 1], ARGV[i + 2])
    end
  end
  local size = 0
  for _, item in ipairs(redis.call('HGETALL', KEYS[6])) do size = size + string.len(item) end
  redis.call('HSET', KEYS[7], ARGV[3], size)
end
for i = 1, 7 do redis.call('EXPIRE', KEYS[i], ttl) end
return added
"""

_LENGTHS_PAGE = 10_000  # lengths are short strings: 10k of them answer in well under 200 KB
# Summaries are at most a few KB each (summary.py): 50 answer in well under the 1 MB a request
# may carry (DESIGN §7).
SUMMARIES_PER_REQUEST = 50
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
    def _summary_keys(self, key: SessionKey) -> list[str]:
        return [f"{self._session(key)}:sum", f"{self._project(key['project_key'])}:sums"]

    def append(self, key: SessionKey, entries: list[Entry]) -> None:
        keys, calls = self._append_calls(key, entries)
        for args in calls:
            call_safely(lambda args=args: self.redis.eval(_APPEND, keys, args), attempts=2)

    def rider(self, key: SessionKey, entries: list[Entry]) -> Rider | None:
        """`append` as one script call to ride in another request to this Redis (the state's
        commit, `state.commit_turn`), or None when it takes more than one request."""
        keys, calls = self._append_calls(key, entries)
        if len(calls) != 1:
            return None
        return lambda pipe: pipe.eval(_APPEND, keys, calls[0])

    def _append_calls(self, key: SessionKey, entries: list[Entry]) -> tuple[list[str],
                                                                           list[list[str]]]:
        """The keys and the argument lists of the append script's calls, one per chunk."""
        keys = [*self._transcript_keys(key), f"{self._project(key['project_key'])}:idx",
                f"{self._session(key)}:subs", *self._summary_keys(key)]
        now = int(time.time() * 1000)
        head = [str(self.ttl), str(now), key["session_id"], key.get("subpath") or ""]
        ops: list[str] = []
        if not key.get("subpath") and entries:  # the summary: one hash, merged by the script
            for op, name, value in [*summary.delta(entries), ("last", "mtime", now)]:
                ops += [op, name, json.dumps(value, ensure_ascii=False)]
        summarized = [*head, str(len(ops) // 3), *ops]
        chunks = list(self._chunks(keys, summarized, entries))  # each sized as if it carried ops
        return keys, [(summarized if index == len(chunks) - 1 else [*head, "0"]) + chunk
                      for index, chunk in enumerate(chunks)]

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

    def list_session_summaries(self, project_key: str) -> list[SessionSummary]:
        """One request for the index and the summaries' sizes, then the summaries themselves in
        as few pipelined requests as fit `max_request_bytes` (one, for hundreds of sessions)."""
        project = self._project(project_key)
        oldest = int(time.time() * 1000) - self.ttl * 1000
        pipe = self.redis.pipeline()
        pipe.zrange(f"{project}:idx", oldest, "+inf", sortby="BYSCORE", withscores=True)
        pipe.hgetall(f"{project}:sums")
        scored, sizes = call_safely(pipe.exec, attempts=2)
        sessions = [str(member) for member, _ in scored if member in sizes]  # others: none yet
        return [found for page in self._summary_pages(sessions, sizes)
                for found in self._read_summaries(project_key, page)]

    def session_summaries(self, project_key: str, session_ids: list[str]) -> list[SessionSummary]:
        """One request per SUMMARIES_PER_REQUEST sessions (a page of 100 chats: 2)."""
        return [found for start in range(0, len(session_ids), SUMMARIES_PER_REQUEST)
                for found in self._read_summaries(
                    project_key, session_ids[start:start + SUMMARIES_PER_REQUEST])]

    def _read_summaries(self, project_key: str, session_ids: list[str]) -> list[SessionSummary]:
        """These sessions' summaries, in one pipelined request (none for no session)."""
        if not session_ids:
            return []
        pipe = self.redis.pipeline()
        for session_id in session_ids:
            pipe.hgetall(self._summary_keys({"project_key": project_key,
                                             "session_id": session_id})[0])
        summaries: list[SessionSummary] = []
        for session_id, stored in zip(session_ids, call_safely(pipe.exec, attempts=2), strict=True):
            fields = {name: json.loads(value) for name, value in (stored or {}).items()}
            if "mtime" in fields:  # else none yet, or deleted since the index was read
                summaries.append(summary.summary_from(session_id, int(fields.pop("mtime")),
                                                      fields))
        return summaries

    def _summary_pages(self, sessions: list[str], sizes: dict[str, str]) -> Iterator[list[str]]:
        """Sessions in pages whose summaries (base64-encoded in a JSON answer) fit one answer."""
        budget = self.max_request_bytes - 64
        page: list[str] = []
        size = 0
        for session_id in sessions:
            item = _b64_size(int(sizes[session_id])) + 32 * 16  # quotes and commas of ~16 fields
            if page and size + item > budget:
                yield page
                page, size = [], 0
            page.append(session_id)
            size += item
        if page:
            yield page

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
            summary_key, sizes_key = self._summary_keys(key)
            doomed = self._transcript_keys(key) + [f"{self._session(key)}:subs", summary_key]
            for subpath in subpaths:
                doomed += self._transcript_keys({**key, "subpath": subpath})
            tx = self.redis.multi()
            tx.delete(*doomed)
            tx.zrem(f"{self._project(key['project_key'])}:idx", key["session_id"])
            tx.hdel(sizes_key, key["session_id"])
        call_safely(tx.exec, attempts=2)
