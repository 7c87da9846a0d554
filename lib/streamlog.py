"""The stream log of a running turn, in Upstash: every UI message stream part, in order, so any
function instance can serve the stream again (`GET /api/chat/{id}/stream`) and a client that
lost its connection continues where it was (each part's index is its SSE `id`). The same
round trips carry the stop flag (`POST /api/chat/{id}/stop`) to the function running the turn.

Keys (`<p>:u:<u>:c:<c>` is the chat's prefix, as in `state.py`):
  ...:log    list: the lock token of the turn that writes it, then its parts as JSON
             strings, `[DONE]` last; replaced when a turn takes its lock (state.py's
             begin_turn), kept LOG_TTL after its last write (a part's index is its position
             after the token)
  ...:stop   the lock token of the turn asked to stop (set only while that turn holds the lock)

The function that runs the turn writes in batches from a background thread: at most one write
per FLUSH_EVERY while parts come (a 2,000-part answer costs tens of round trips, not
thousands), and a stop check every CHECK_EVERY when none do. Readers poll (Upstash has no
blocking reads over REST: DESIGN §7).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from upstash_redis import Redis

from lib.errors import ServiceError
from lib.state import TURN_LEASE_MS, call_safely

log = logging.getLogger("agent.streamlog")

LOG_TTL_MS = 10 * 60 * 1000
FLUSH_EVERY = 0.1
CHECK_EVERY = 1.0  # a stop lands within this (+ the interrupt); each check is a round trip
POLL_EVERY = 0.15
DONE = "[DONE]"

_KEY_LOCKING = "#!lua flags=allow-key-locking\n"

# KEYS: log, stop, chat lock, busy. ARGV: ttl ms, token, lease ms, now ms, parts...
# -> 1 when this turn is asked to stop, else 0. Renews the turn's lock and its entry among the
# user's running turns while it holds them (state.py: a short lease, kept alive here).
# Parts are only added to this turn's own log (a newer turn's has another token first).
_WRITE = _KEY_LOCKING + """
if #ARGV > 4 and redis.call('LINDEX', KEYS[1], 0) == ARGV[2] then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 5))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
if redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  redis.call('ZADD', KEYS[4], 'XX', tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
end
if redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
return 0
"""

# KEYS: chat lock, stop. ARGV: ttl ms -> 1 asked | 0 nothing runs
_STOP = _KEY_LOCKING + """
local token = redis.call('GET', KEYS[1])
if not token then return 0 end
redis.call('SET', KEYS[2], token, 'PX', ARGV[1])
return 1
"""

# KEYS: log, chat lock. ARGV: start -> {writer's token or "", running turn's token or "",
# parts from start...}
_READ = _KEY_LOCKING + """
return {redis.call('LINDEX', KEYS[1], 0) or '', redis.call('GET', KEYS[2]) or '',
        unpack(redis.call('LRANGE', KEYS[1], tonumber(ARGV[1]) + 1, -1))}
"""


class StreamLog:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, user: str, chat: str, part: str) -> str:
        return f"{self.prefix}:u:{user}:c:{chat}:{part}"

    def open(self, user: str, chat: str, token: str, lifetime: float) -> LiveLog:
        """The writer of the log of the turn holding `token` (its lock), for at most `lifetime`
        seconds: whoever encodes the turn's parts closes it."""
        return LiveLog(self, user, chat, token, lifetime)

    def write(self, user: str, chat: str, token: str, parts: list[str]) -> bool:
        """Append parts and renew the turn's lease (one round trip); True when the turn is
        asked to stop."""
        keys = [self._key(user, chat, "log"), self._key(user, chat, "stop"),
                self._key(user, chat, "lock"), f"{self.prefix}:u:{user}:busy"]
        args = [str(LOG_TTL_MS), token, str(TURN_LEASE_MS), str(int(time.time() * 1000)),
                *parts]
        return bool(call_safely(lambda: self.redis.eval(_WRITE, keys, args), attempts=1))

    def read(self, user: str, chat: str, start: int) -> tuple[str, str, list[str]]:
        """(the token of the turn that wrote the log, that of the turn running now, the parts
        from index `start`); tokens are "" when there is none."""
        answer = call_safely(lambda: self.redis.eval(
            _READ, [self._key(user, chat, "log"), self._key(user, chat, "lock")],
            [str(start)]), attempts=2)
        return answer[0], answer[1], list(answer[2:])

    def request_stop(self, user: str, chat: str) -> bool:
        """Ask the chat's running turn to stop; False when no turn runs."""
        keys = [f"{self.prefix}:u:{user}:c:{chat}:lock", self._key(user, chat, "stop")]
        return bool(call_safely(lambda: self.redis.eval(_STOP, keys, [str(LOG_TTL_MS)]),
                                attempts=2))

    def follow(self, user: str, chat: str, start: int | None, deadline: float,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[tuple[int, str]]:
        """The stream to serve again, as (index, part), polling for new parts until `[DONE]`
        (or `deadline`, monotonic). `start` None: the running turn's whole stream, nothing when
        no turn runs; else the parts after a client's last seen index (`Last-Event-ID`), of
        the running turn or of the one that just ended."""
        index, token = start or 0, None
        while time.monotonic() < deadline:
            writer, running, parts = self.read(user, chat, index)
            if token is None:  # which turn's stream this is
                if start is None and not running:
                    return  # nothing runs
                if running and writer != running:
                    sleep(POLL_EVERY)  # the running turn has not written its log yet
                    continue
                if not writer:
                    return
                token = writer
            elif writer != token:
                return  # the log was replaced by a newer turn's
            for part in parts:
                yield index, part
                index += 1
                if part == DONE:
                    return
            if not parts:
                sleep(POLL_EVERY)


class LiveLog:
    """The writer of one turn's log: `add` is called as parts are produced; a background
    thread writes them in batches and watches the stop flag; `close` writes what is left."""

    def __init__(self, store: StreamLog, user: str, chat: str, token: str,
                 lifetime: float) -> None:
        self.store, self.user, self.chat, self.token = store, user, chat, token
        self._ends = time.monotonic() + lifetime  # a writer nobody closed stops by itself
        self._warned = False
        self.on_stop: Callable[[], None] = lambda: None
        self._pending: list[str] = []
        self._count = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"streamlog:{chat}", daemon=True)
        self._thread.start()

    def add(self, part: str) -> int:
        """Queue one part (JSON text, or `[DONE]`); its index in the log."""
        with self._lock:
            self._pending.append(part)
            self._count += 1
            return self._count - 1

    def close(self) -> None:
        """Write what is left and stop watching (idempotent)."""
        if not self._closed.is_set():
            self._closed.set()
            self._thread.join(timeout=10)
            if self._pending:
                self._flush()

    def _flush(self) -> None:
        with self._lock:
            parts, self._pending = self._pending, []
        try:
            asked = self.store.write(self.user, self.chat, self.token, parts)
        except ServiceError as error:  # the turn goes on; resuming clients may miss parts
            if not self._warned:
                self._warned = True
                log.warning("could not write the stream log: %s", error.message)
            with self._lock:
                self._pending = parts + self._pending  # try again with the next batch
            return
        if asked and not self._stopped:
            self._stopped = True
            self.on_stop()

    def _run(self) -> None:
        last_check = time.monotonic()  # a turn shorter than CHECK_EVERY costs no round trip
        while not self._closed.wait(FLUSH_EVERY) and time.monotonic() < self._ends:
            with self._lock:
                pending = bool(self._pending)
            if pending or time.monotonic() - last_check >= CHECK_EVERY:
                self._flush()
                last_check = time.monotonic()
