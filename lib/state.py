"""Per-user state in Upstash Redis, through the real `upstash-redis` client.

A user has one sandbox and many conversations (chats, named by the client: `useChat`'s id).
Keys (`<p>` is KEY_PREFIX, `<u>` the user hash, `<c>` a chat id):
  <p>:u:<u>:rec        the user record, JSON: sandbox name and hint, first and last activity
  <p>:u:<u>:lock       the user lock: cleanup and "forget everything" hold it; no turn starts
  <p>:u:<u>:busy       sorted set: the tokens of the user's running turns -> lease end (ms)
  <p>:u:<u>:chats      sorted set: chat id -> last activity (unix seconds)
  <p>:u:<u>:c:<c>      a chat, a hash: session_id, turns, created_at, last_active_at, title,
                       first_prompt
  <p>:u:<u>:c:<c>:lock the chat's turn lock: a random token, SET NX PX with a lease
  <p>:u:<u>:c:<c>:ids  hash: transcript uuid -> the message id the client saw
  <p>:activity         sorted set, member <u>, score = the user's last activity: every user
  <p>:awake            the same, for users whose sandbox may still be running
  <p>:chat-activity    sorted set, member "<u>:<c>", score = the chat's last activity

A turn's lock has a short lease (TURN_LEASE_MS) that the function running the turn renews as it
goes (with the stream log's writes, streamlog.py): a function that dies mid-turn, or a lock
write that lands after its request gave up (a stalled Redis), holds the chat for seconds, not
minutes. An acquire that failed is released at once, best effort, with the same token.

A turn is two round trips: `begin_turn` takes the chat's lock, registers the turn in the user's
busy set (unless the user lock is held) and reads the user record and the chat, in one script;
`commit_turn` writes both records, the indexes and the message ids, and releases, only if the
chat lock still holds our token (the token fences the write). Cleanup takes the user lock only
when no turn is running (`begin_user`), so it never stops a sandbox under a turn, and a turn
never starts on a sandbox cleanup is working on. One turn per chat; chats of one user run at
the same time.

A user record of the previous version (one conversation per user: it also held session_id and
turns) is read as the user's `default` chat, and rewritten as such by the next commit.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TypeVar

import httpx
from upstash_redis import Redis
from upstash_redis.errors import UpstashError

from lib.errors import LockLost, ServiceError, StateUnavailable, TurnInProgress
from lib.limits import CHECK_LUA, COUNT_LUA, NO_LIMITS, LimitCheck, TurnLimits
from lib.transcripts import Rider

T = TypeVar("T")
DEFAULT_CHAT = "default"
TURN_LEASE_MS = 30_000  # renewed while the turn runs (streamlog.py); a dead turn frees its chat

# The first line lets Upstash lock only the script's keys; the local stand-in strips it.
_KEY_LOCKING = "#!lua flags=allow-key-locking\n"

# KEYS: user lock, busy, chat lock, user record, chat, stream log, then the limits' (limits.py).
# ARGV: token, lease ms, now ms, then the limits'.
# -> {1, record or "", chat fields...} | {0, pttl, "user" | "chat"} | {0, reset ms, "rate" | "daily"}
# The turn's stream log (streamlog.py) starts here, with the turn's token, and the turn counts
# against the user's limits once it has the lock: no round trips of their own.
# Taking a lock that already holds our token succeeds, so a retried acquire is idempotent (and
# is not counted twice).
_BEGIN_TURN = _KEY_LOCKING + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1]), 'user'}
end
local current = redis.call('GET', KEYS[3])
if current and current ~= ARGV[1] then
  return {0, redis.call('PTTL', KEYS[3]), 'chat'}
end
""" + CHECK_LUA + """
if not current then
""" + COUNT_LUA + """
end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[6])
redis.call('RPUSH', KEYS[6], ARGV[1])
redis.call('PEXPIRE', KEYS[6], ARGV[2])
local chat = redis.call('HGETALL', KEYS[5])
return {1, redis.call('GET', KEYS[4]) or '', unpack(chat)}
"""

# KEYS: chat lock, busy, user record, chat, chats, activity, awake, chat-activity, ids,
#       default chat (for a record of the previous version)
# ARGV: token, user json, score, user member, chat id, chat member, n chat fields, fields...,
#       n id pairs, pairs..., legacy default chat fields...
# -> 1 saved | 0 lock lost. A retry after a lost answer finds its own token on the chat and
# succeeds again.
_COMMIT_TURN = _KEY_LOCKING + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('HGET', KEYS[4], 'committed_by') == ARGV[1] then return 1 end
  return 0
end
local i = 7
local n = tonumber(ARGV[i])
local chat = {}
for j = 1, n do chat[j] = ARGV[i + j] end
i = i + n + 1
n = tonumber(ARGV[i])
local ids = {}
for j = 1, n do ids[j] = ARGV[i + j] end
i = i + n + 1
if i <= #ARGV and redis.call('EXISTS', KEYS[10]) == 0 then
  local legacy = {}
  for j = i, #ARGV do legacy[#legacy + 1] = ARGV[j] end
  redis.call('HSET', KEYS[10], unpack(legacy))
  for j = 1, #legacy, 2 do
    if legacy[j] == 'last_active_at' then
      redis.call('ZADD', KEYS[5], legacy[j + 1], 'default')
      redis.call('ZADD', KEYS[8], legacy[j + 1], ARGV[4] .. ':default')
    end
  end
end
redis.call('SET', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[4], 'committed_by', ARGV[1], unpack(chat))
redis.call('HDEL', KEYS[4], 'dirty')
if #ids > 0 then redis.call('HSET', KEYS[9], unpack(ids)) end
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[5])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[8], ARGV[3], ARGV[6])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: chat lock, busy, chat. ARGV: token, dirty (1: the turn failed after the agent began:
# its tail is in the transcripts but not in the conversation) -> 1 released | 0 not ours
_RELEASE_TURN = _KEY_LOCKING + """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'dirty', '1')
end
return redis.call('DEL', KEYS[1])
"""

# KEYS: user lock, busy, user record, chats. ARGV: token, lease ms, now ms
# -> {1, record or "", chat ids...} | {0, pttl (0 when turns run)}
_BEGIN_USER = _KEY_LOCKING + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[2]) > 0 then return {0, 0} end
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return {0, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('GET', KEYS[3]) or '', unpack(redis.call('ZRANGE', KEYS[4], 0, -1))}
"""

# KEYS: user lock. ARGV: token -> 1 | 0
_RELEASE_USER = _KEY_LOCKING + """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: user lock, user record, chats, activity, awake, chat-activity, then per chat: chat,
# ids. ARGV: token, member, chat-activity members... -> 1 forgotten | 0 lock lost
_FORGET_USER = _KEY_LOCKING + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if not redis.call('GET', KEYS[2]) then return 1 end
  return 0
end
for i = 7, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
for i = 3, #ARGV do redis.call('ZREM', KEYS[6], ARGV[i]) end
return 1
"""

# KEYS: chat lock, busy, chat, ids, chats, chat-activity. ARGV: token, chat id, chat member
# -> 1 | 0 lock lost
_FORGET_CHAT = _KEY_LOCKING + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[2])
redis.call('ZREM', KEYS[6], ARGV[3])
return 1
"""

# KEYS: user lock, awake. ARGV: token, member -> 1 | 0 lock lost
_SETTLE_STOPPED = _KEY_LOCKING + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: chat. ARGV: title -> 1 renamed | 0 no such chat
_RENAME = _KEY_LOCKING + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'title', ARGV[1])
return 1
"""

# KEYS: chats, user record. ARGV: offset, count -> {total, record or "", id, score, id, ...}
_LIST_CHATS = _KEY_LOCKING + """
local page = redis.call('ZREVRANGE', KEYS[1], ARGV[1], tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1,
                        'WITHSCORES')
return {redis.call('ZCARD', KEYS[1]), redis.call('GET', KEYS[2]) or '', unpack(page)}
"""


@dataclass(frozen=True)
class UserRecord:
    """What we keep per user: their sandbox, and how active they are."""

    sandbox_name: str
    created_at: float
    last_active_at: float
    # Where the sandbox was at the last commit (the backend's opaque hint: on Vercel its session
    # id), so the next turn runs its command without looking the sandbox up first.
    sandbox_hint: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ChatRecord:
    """One conversation: its Claude session and how it has been used."""

    session_id: str
    turns: int
    created_at: float
    last_active_at: float
    title: str | None = None  # given by the user (PATCH)
    first_prompt: str | None = None  # the title until there is one, shortened
    # The newest transcript entry of the last committed turn; `dirty` when a turn failed after
    # the agent began, so its tail is in the transcripts: the next turn resumes at last_uuid.
    last_uuid: str | None = None
    dirty: bool = False

    def to_fields(self) -> list[str]:
        """What a commit writes (`dirty` is cleared by the commit itself)."""
        return [item for name, value in asdict(self).items()
                if value is not None and name != "dirty" for item in (name, str(value))]

    @classmethod
    def from_fields(cls, flat: list[str]) -> ChatRecord | None:
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        if "session_id" not in raw:
            return None
        return cls(raw["session_id"], int(raw.get("turns") or 0),
                   float(raw.get("created_at") or 0), float(raw.get("last_active_at") or 0),
                   raw.get("title") or None, raw.get("first_prompt") or None,
                   raw.get("last_uuid") or None, raw.get("dirty") == "1")


def parse_user(raw: str) -> tuple[UserRecord | None, ChatRecord | None]:
    """The user record, and the conversation a record of the previous version held (then the
    user's `default` chat). Fields this version does not know are ignored."""
    if not raw:
        return None, None
    data = json.loads(raw)
    known = {f.name for f in fields(UserRecord)}
    user = UserRecord(**{k: v for k, v in data.items() if k in known})
    legacy = None
    if data.get("session_id"):
        legacy = ChatRecord(str(data["session_id"]), int(data.get("turns") or 0),
                            float(data["created_at"]), float(data["last_active_at"]))
    return user, legacy


@dataclass(frozen=True)
class Lease:
    """Proof that this caller holds a lock: a chat's turn lock, or (chat None) the user lock."""

    user: str
    token: str
    record: UserRecord | None
    chat: str | None = None
    chat_record: ChatRecord | None = None
    legacy: ChatRecord | None = None  # the previous version's conversation, not yet migrated
    chats: tuple[str, ...] = ()  # a user lease: the user's chat ids

    def sandbox_name(self, prefix: str) -> str:
        """The sandbox of the record, or the one a first turn creates: prefix + user hash."""
        return self.record.sandbox_name if self.record else f"{prefix}{self.user}"


def connect(url: str, token: str, timeout: float) -> Redis:
    """One client per process. The client's own retry sleeps 3 s and retries every command,
    safe or not, and its httpx client has no timeout (DESIGN §7): turn both into ours."""
    client = Redis(url, token, rest_retries=0, allow_telemetry=False, read_your_writes=True)
    client._http._client.timeout = httpx.Timeout(timeout)  # no public knob for this
    return client


def _retry_after(pttl: int) -> int:
    return min(5, max(1, -(-int(pttl) // 1000)) if int(pttl) > 0 else 1)


class StateStore:
    def __init__(self, redis: Redis, prefix: str, lock_ttl_ms: int,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lock_ttl_ms = lock_ttl_ms
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.activity_key = f"{prefix}:activity"
        self.awake_key = f"{prefix}:awake"
        self.chat_activity_key = f"{prefix}:chat-activity"

    # keys ----------------------------------------------------------------------------------------
    def _user(self, user: str, part: str) -> str:
        return f"{self.prefix}:u:{user}:{part}"

    def _chat(self, user: str, chat: str, part: str = "") -> str:
        return f"{self.prefix}:u:{user}:c:{chat}{':' + part if part else ''}"

    @staticmethod
    def chat_member(user: str, chat: str) -> str:
        return f"{user}:{chat}"

    # turns ---------------------------------------------------------------------------------------
    def begin_turn(self, user: str, chat: str, limits: TurnLimits | None = None) -> Lease:
        """Take the chat's turn lock, count the turn as running for the user (and against
        `limits`: RateLimited when over them, the lock not taken), and read the user record and
        the chat, in one round trip."""
        token = secrets.token_urlsafe(18)
        now = self.clock_ms()
        check: LimitCheck = limits.check(user, now) if limits else NO_LIMITS
        keys = [self._user(user, "lock"), self._user(user, "busy"), self._chat(user, chat, "lock"),
                self._user(user, "rec"), self._chat(user, chat), self._chat(user, chat, "log"),
                *check.keys]
        lease = min(self.lock_ttl_ms, TURN_LEASE_MS)
        try:
            answer = call_safely(
                lambda: self.redis.eval(_BEGIN_TURN, keys,
                                        [token, str(lease), str(now), *check.args]),
                attempts=2,  # same token: a retry after a lost answer cannot lock us out
            )
        except StateUnavailable:
            self._release_later(Lease(user, token, None, chat))
            raise
        if not answer[0]:
            if answer[2] in ("rate", "daily"):
                raise TurnLimits.refused(answer[2], answer[1])
            if answer[2] == "user":
                raise TurnInProgress("this user's sandbox is being cleaned up; retry shortly",
                                     retry_after=_retry_after(answer[1]))
            raise TurnInProgress("another turn of this conversation is running; retry when it "
                                 "ends", retry_after=_retry_after(answer[1]))
        record, legacy = parse_user(answer[1])
        chat_record = ChatRecord.from_fields(answer[2:])
        if chat_record is None and chat == DEFAULT_CHAT and legacy is not None:
            chat_record = legacy
        return Lease(user, token, record, chat, chat_record, legacy)

    def commit_turn(self, lease: Lease, record: UserRecord, chat: ChatRecord,
                    ids: dict[str, str] | None = None, riders: Sequence[Rider] = ()) -> None:
        """Save the user record and the chat, index their activity, keep the message ids and
        release the lock, in one round trip, with the `riders` (the turn's transcript batches:
        mirror.py) in the same transaction."""
        assert lease.chat is not None
        user, name = lease.user, lease.chat
        keys = [self._chat(user, name, "lock"), self._user(user, "busy"), self._user(user, "rec"),
                self._chat(user, name), self._user(user, "chats"), self.activity_key,
                self.awake_key, self.chat_activity_key, self._chat(user, name, "ids"),
                self._chat(user, DEFAULT_CHAT)]
        chat_fields = chat.to_fields()
        id_pairs = [item for pair in (ids or {}).items() for item in pair]
        legacy = lease.legacy.to_fields() if lease.legacy and name != DEFAULT_CHAT else []
        args = [lease.token, record.to_json(), str(record.last_active_at), user, name,
                self.chat_member(user, name), str(len(chat_fields)), *chat_fields,
                str(len(id_pairs)), *id_pairs, *legacy]

        def commit() -> int:
            if not riders:
                return self.redis.eval(_COMMIT_TURN, keys, args)
            transaction = self.redis.multi()
            for rider in riders:  # idempotent (uuids), like the commit: safe to send again
                rider(transaction)
            transaction.eval(_COMMIT_TURN, keys, args)
            return transaction.exec()[-1]

        saved = call_safely(commit, attempts=2)
        if not saved:
            raise LockLost("the turn outlived its lock; its result was not saved")

    def _release_later(self, lease: Lease) -> None:
        """An acquire whose answer was lost may still land (a stalled Redis): release it with
        the same token, from a thread (the caller answers 503 now), best effort."""
        def release() -> None:
            with contextlib.suppress(ServiceError):
                self.release(lease)

        threading.Thread(target=release, name="release-lost-acquire", daemon=True).start()

    def release(self, lease: Lease, dirty: bool = False) -> None:
        """Give up a lock without saving (idempotent). `dirty`: the turn failed after the agent
        began, so the next turn must resume at the chat's last committed entry."""
        if lease.chat is None:
            call_safely(lambda: self.redis.eval(_RELEASE_USER, [self._user(lease.user, "lock")],
                                                [lease.token]), attempts=2)
            return
        keys = [self._chat(lease.user, lease.chat, "lock"), self._user(lease.user, "busy"),
                self._chat(lease.user, lease.chat)]
        call_safely(lambda: self.redis.eval(_RELEASE_TURN, keys,
                                            [lease.token, "1" if dirty else "0"]), attempts=2)

    def forget_chat(self, lease: Lease) -> None:
        """Delete the chat (record, message ids, index entries) and release its lock."""
        assert lease.chat is not None
        user, name = lease.user, lease.chat
        keys = [self._chat(user, name, "lock"), self._user(user, "busy"), self._chat(user, name),
                self._chat(user, name, "ids"), self._user(user, "chats"),
                self.chat_activity_key]
        args = [lease.token, name, self.chat_member(user, name)]
        if not call_safely(lambda: self.redis.eval(_FORGET_CHAT, keys, args), attempts=2):
            raise LockLost("the lock was lost while deleting the conversation")
        if lease.legacy is not None and name == DEFAULT_CHAT and lease.record is not None:
            # The previous version's record held this conversation: keep only the user part.
            call_safely(lambda: self.redis.set(self._user(user, "rec"), lease.record.to_json()),
                        attempts=2)

    def rename_chat(self, user: str, chat: str, title: str) -> bool:
        """Give an existing chat a title (False: no such chat). A turn's commit leaves it."""
        return bool(call_safely(lambda: self.redis.eval(_RENAME, [self._chat(user, chat)],
                                                        [title]), attempts=2))

    # users (cleanup, forget) -----------------------------------------------------------------------
    def begin_user(self, user: str) -> Lease:
        """Take the user lock when none of their turns runs (TurnInProgress otherwise) and read
        their record and chat ids, in one round trip."""
        token = secrets.token_urlsafe(18)
        keys = [self._user(user, "lock"), self._user(user, "busy"), self._user(user, "rec"),
                self._user(user, "chats")]
        try:
            answer = call_safely(
                lambda: self.redis.eval(_BEGIN_USER, keys,
                                        [token, str(self.lock_ttl_ms), str(self.clock_ms())]),
                attempts=2)
        except StateUnavailable:
            self._release_later(Lease(user, token, None))
            raise
        if not answer[0]:
            raise TurnInProgress("a turn of this user is running; retry when it ends",
                                 retry_after=_retry_after(answer[1]))
        record, legacy = parse_user(answer[1])
        chats = tuple(answer[2:])
        if legacy is not None and DEFAULT_CHAT not in chats:
            chats = (*chats, DEFAULT_CHAT)
        return Lease(user, token, record, legacy=legacy, chats=chats)

    def forget_user(self, lease: Lease) -> None:
        """Delete the user record, every chat and every index entry, and release, in one
        round trip."""
        user = lease.user
        keys = [self._user(user, "lock"), self._user(user, "rec"), self._user(user, "chats"),
                self.activity_key, self.awake_key, self.chat_activity_key]
        for chat in lease.chats:
            keys += [self._chat(user, chat), self._chat(user, chat, "ids")]
        args = [lease.token, user, *(self.chat_member(user, chat) for chat in lease.chats)]
        if not call_safely(lambda: self.redis.eval(_FORGET_USER, keys, args), attempts=2):
            raise LockLost("the lock was lost while forgetting the user")

    def settle_stopped(self, lease: Lease) -> None:
        """The user's sandbox is stopped (or gone): drop them from the awake index and release
        the user lock, in one round trip."""
        settled = call_safely(
            lambda: self.redis.eval(_SETTLE_STOPPED, [self._user(lease.user, "lock"),
                                                      self.awake_key], [lease.token, lease.user]),
            attempts=2,
        )
        if not settled:
            raise LockLost("the lock was lost while stopping the sandbox")

    # reads ---------------------------------------------------------------------------------------
    def read_user(self, user: str) -> tuple[UserRecord | None, ChatRecord | None]:
        """The user record, and the previous version's conversation when it still holds one."""
        raw = call_safely(lambda: self.redis.get(self._user(user, "rec")), attempts=2)
        return parse_user(raw or "")

    def read_chat(self, user: str, chat: str) -> ChatRecord | None:
        flat = call_safely(lambda: self.redis.hgetall(self._chat(user, chat)), attempts=2)
        record = ChatRecord.from_fields([x for pair in (flat or {}).items() for x in pair])
        if record is None and chat == DEFAULT_CHAT:
            return self.read_user(user)[1]
        return record

    def list_chats(self, user: str, offset: int, limit: int
                   ) -> tuple[list[tuple[str, ChatRecord]], int]:
        """A page of the user's chats, newest activity first, and how many there are."""
        answer = call_safely(lambda: self.redis.eval(
            _LIST_CHATS, [self._user(user, "chats"), self._user(user, "rec")],
            [str(offset), str(limit)]), attempts=2)
        total, (_, legacy), page = int(answer[0]), parse_user(answer[1]), answer[2::2]
        names = list(page)
        if legacy is not None and DEFAULT_CHAT not in names:  # the previous version's one
            total += 1
            if offset + len(names) < total and len(names) < limit:
                names.append(DEFAULT_CHAT)
        if not names:
            return [], total
        flats = call_safely(lambda: self.redis.eval(
            _HGETALLS, [self._chat(user, name) for name in names], []), attempts=2)
        chats = []
        for name, flat in zip(names, flats, strict=True):
            record = ChatRecord.from_fields(flat) or (legacy if name == DEFAULT_CHAT else None)
            if record is not None:
                chats.append((name, record))
        return chats, total

    def message_ids(self, user: str, chat: str) -> dict[str, str]:
        """Transcript uuid -> the message id the client saw, for the chat's messages."""
        return call_safely(lambda: self.redis.hgetall(self._chat(user, chat, "ids")),
                           attempts=2) or {}

    def due(self, index: str, before: float, offset: int, limit: int) -> list[str]:
        """Up to `limit` members of an index (`activity_key`, `awake_key`, `chat_activity_key`)
        last active before `before`, oldest first, skipping `offset`: the cleanup's work list,
        whose cost grows with what is due, not with the number of users."""
        return call_safely(
            lambda: self.redis.zrange(index, "-inf", f"({before}", sortby="BYSCORE",
                                      offset=offset, count=limit),
            attempts=2,
        )

    def drop_index_entry(self, index: str, member: str) -> None:
        call_safely(lambda: self.redis.zrem(index, member), attempts=2)

    def read_marker(self, name: str) -> str | None:
        return call_safely(lambda: self.redis.get(f"{self.prefix}:marker:{name}"), attempts=2)

    def write_marker(self, name: str, value: str) -> None:
        call_safely(lambda: self.redis.set(f"{self.prefix}:marker:{name}", value), attempts=2)

    def existing(self, users: list[str]) -> set[str]:
        """Which of these users have a record, in one round trip."""
        if not users:
            return set()
        values = call_safely(lambda: self.redis.mget(*[self._user(u, "rec") for u in users]),
                             attempts=2)
        return {user for user, value in zip(users, values, strict=True) if value}

    def lock_holder(self, user: str, chat: str | None = None) -> str | None:
        key = self._user(user, "lock") if chat is None else self._chat(user, chat, "lock")
        return call_safely(lambda: self.redis.get(key), attempts=2)

    def running_turns(self, user: str) -> int:
        key = self._user(user, "busy")
        return int(call_safely(
            lambda: self.redis.zcount(key, self.clock_ms(), "+inf"), attempts=2))

    def ping(self) -> bool:
        return call_safely(self.redis.ping, attempts=1) == "PONG"


# KEYS: chats -> {fields of each, as flat lists}
_HGETALLS = _KEY_LOCKING + """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
"""


def call_safely(command: Callable[[], T], attempts: int) -> T:
    """Run one Upstash command, retrying only where the caller said it is safe; map every failure
    of the client (its own error, transport errors, malformed answers) to StateUnavailable."""
    for attempt in range(attempts):
        try:
            return command()
        except UpstashError as error:  # the server answered with an error: do not retry
            raise StateUnavailable(f"state store error: {error}") from None
        except (httpx.HTTPError, ValueError, AttributeError, KeyError, TypeError) as error:
            if attempt + 1 == attempts:
                raise StateUnavailable(f"state store unreachable: {type(error).__name__}") from None
    raise AssertionError("unreachable")

