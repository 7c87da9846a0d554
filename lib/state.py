"""Per-user state in Upstash Redis, through the real `upstash-redis` client.

Keys (`<p>` is KEY_PREFIX, `<u>` the user hash):
  <p>:u:<u>:rec    the session record, a JSON string
  <p>:u:<u>:lock   the turn lock: a random token, SET NX PX with a lease
  <p>:activity     sorted set, member <u>, score = last activity (unix seconds): every session
  <p>:awake        the same, for users whose sandbox may still be running

Each step of a turn is one round trip: `begin` takes the lock and reads the record in one
script; `commit` writes the record, updates both indexes and releases the lock in one script,
only if the lock token still matches (the token fences the write). The cleanup job takes the
same lock, so it never works on a user whose turn is running, and a turn never starts while
cleanup works on its user.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import TypeVar

import httpx
from upstash_redis import Redis
from upstash_redis.errors import UpstashError

from lib.errors import LockLost, StateUnavailable, TurnInProgress

T = TypeVar("T")

# The first line lets Upstash lock only the script's keys; the local stand-in strips it.
_KEY_LOCKING = "#!lua flags=allow-key-locking\n"

# KEYS: lock, record. ARGV: token, lease ms. -> {1, record or ""} | {0, lock pttl}
# Taking a lock that already holds our token succeeds, so a retried acquire is idempotent.
_BEGIN = _KEY_LOCKING + """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('GET', KEYS[2]) or ''}
"""

# KEYS: lock, record, activity, awake. ARGV: token, record json, score, member
# -> 1 saved | 0 lock lost. A retry after a lost answer finds its own record and succeeds again.
_COMMIT = _KEY_LOCKING + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: lock, awake. ARGV: token, member -> 1 | 0 lock lost
_SETTLE_STOPPED = _KEY_LOCKING + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: lock. ARGV: token -> 1 released | 0 not ours
_RELEASE = _KEY_LOCKING + """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lock, record, activity, awake. ARGV: token, member -> 1 forgotten | 0 lock lost
_FORGET = _KEY_LOCKING + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if not redis.call('GET', KEYS[2]) then return 1 end
  return 0
end
redis.call('DEL', KEYS[2], KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class SessionRecord:
    """What we keep per user: which Claude session, in which sandbox, and how active."""

    session_id: str
    sandbox_name: str
    turns: int
    created_at: float
    last_active_at: float
    # Where the sandbox was at the last commit (the backend's opaque hint: on Vercel its session
    # id), so the next turn runs its command without looking the sandbox up first.
    sandbox_hint: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> SessionRecord:
        """Fields this version does not know (a newer deployment's) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(raw).items() if k in known})


@dataclass(frozen=True)
class Lease:
    """Proof that this caller holds a user's turn lock."""

    user: str
    token: str
    record: SessionRecord | None

    def sandbox_name(self, prefix: str) -> str:
        """The sandbox of the record, or the one a first turn creates: prefix + user hash."""
        return self.record.sandbox_name if self.record else f"{prefix}{self.user}"


def connect(url: str, token: str, timeout: float) -> Redis:
    """One client per process. The client's own retry sleeps 3 s and retries every command,
    safe or not, and its httpx client has no timeout (DESIGN §7): turn both into ours."""
    client = Redis(url, token, rest_retries=0, allow_telemetry=False, read_your_writes=True)
    client._http._client.timeout = httpx.Timeout(timeout)  # no public knob for this
    return client


class StateStore:
    def __init__(self, redis: Redis, prefix: str, lock_ttl_ms: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lock_ttl_ms = lock_ttl_ms
        self.activity_key = f"{prefix}:activity"
        self.awake_key = f"{prefix}:awake"

    def _keys(self, user: str) -> tuple[str, str]:
        return f"{self.prefix}:u:{user}:lock", f"{self.prefix}:u:{user}:rec"

    def begin(self, user: str) -> Lease:
        """Take the user's turn lock and read their record, in one round trip."""
        token = secrets.token_urlsafe(18)
        lock, rec = self._keys(user)
        acquired, value = call_safely(
            lambda: self.redis.eval(_BEGIN, [lock, rec], [token, str(self.lock_ttl_ms)]),
            attempts=2,  # same token: a retry after a lost answer cannot lock us out
        )
        if not acquired:
            retry_after = max(1, -(-int(value) // 1000)) if int(value) > 0 else 1
            raise TurnInProgress(
                "another turn for this user is running; retry when it ends",
                retry_after=min(retry_after, 5),
            )
        return Lease(user, token, SessionRecord.from_json(value) if value else None)

    def commit(self, lease: Lease, record: SessionRecord) -> None:
        """Save the record, index its activity and release the lock, in one round trip."""
        lock, rec = self._keys(lease.user)
        saved = call_safely(
            lambda: self.redis.eval(
                _COMMIT,
                [lock, rec, self.activity_key, self.awake_key],
                [lease.token, record.to_json(), str(record.last_active_at), lease.user],
            ),
            attempts=2,
        )
        if not saved:
            raise LockLost("the turn outlived its lock; its result was not saved")

    def release(self, lease: Lease) -> None:
        lock, _ = self._keys(lease.user)
        call_safely(lambda: self.redis.eval(_RELEASE, [lock], [lease.token]), attempts=2)

    def forget(self, lease: Lease) -> None:
        """Delete the record and its index entry and release the lock, in one round trip."""
        lock, rec = self._keys(lease.user)
        forgotten = call_safely(
            lambda: self.redis.eval(_FORGET, [lock, rec, self.activity_key, self.awake_key],
                                    [lease.token, lease.user]),
            attempts=2,
        )
        if not forgotten:
            raise LockLost("the lock was lost while forgetting the session")

    def settle_stopped(self, lease: Lease) -> None:
        """The user's sandbox is stopped (or gone): drop them from the awake index and release
        the lock, in one round trip."""
        lock, _ = self._keys(lease.user)
        settled = call_safely(
            lambda: self.redis.eval(_SETTLE_STOPPED, [lock, self.awake_key],
                                    [lease.token, lease.user]),
            attempts=2,
        )
        if not settled:
            raise LockLost("the lock was lost while stopping the sandbox")

    def due(self, index: str, before: float, offset: int, limit: int) -> list[str]:
        """Up to `limit` members of an index (`activity_key` or `awake_key`) last active before
        `before`, oldest first, skipping `offset`: the cleanup's work list, whose cost grows
        with what is due, not with the number of users."""
        return call_safely(
            lambda: self.redis.zrange(index, "-inf", f"({before}", sortby="BYSCORE",
                                      offset=offset, count=limit),
            attempts=2,
        )

    def read_marker(self, name: str) -> str | None:
        return call_safely(lambda: self.redis.get(f"{self.prefix}:marker:{name}"), attempts=2)

    def write_marker(self, name: str, value: str) -> None:
        call_safely(lambda: self.redis.set(f"{self.prefix}:marker:{name}", value), attempts=2)

    def existing(self, users: list[str]) -> set[str]:
        """Which of these users have a record, in one round trip."""
        if not users:
            return set()
        values = call_safely(lambda: self.redis.mget(*[self._keys(u)[1] for u in users]), attempts=2)
        return {user for user, value in zip(users, values, strict=True) if value}

    def read(self, user: str) -> SessionRecord | None:
        _, rec = self._keys(user)
        raw = call_safely(lambda: self.redis.get(rec), attempts=2)
        return SessionRecord.from_json(raw) if raw else None

    def lock_holder(self, user: str) -> str | None:
        lock, _ = self._keys(user)
        return call_safely(lambda: self.redis.get(lock), attempts=2)

    def ping(self) -> bool:
        return call_safely(self.redis.ping, attempts=1) == "PONG"


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
