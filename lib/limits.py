"""Per-user limits on turns: a sliding window (RATE_LIMIT, e.g. 20 turns per 60 s) and a daily
cap (MAX_TURNS_PER_DAY), checked and counted by the script that takes the turn's lock
(`state.begin_turn`), so they cost no round trip of their own.

The algorithms and keys are upstash-ratelimit's (`SlidingWindow`: `<p>:rl:<u>:<window index>`,
the previous window weighted by how much of it still overlaps; `FixedWindow`:
`<p>:daily:<u>:<day index>`), so counts carry over from a deployment that used it. A script of
ours instead of the library: the library is one request per limiter, and it counts a turn the
daily cap refuses against the rate window (and `FixedWindow` counts refused requests), where
here a turn counts only when it starts: not on a 409 (another turn of the chat runs), not on a
429.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lib.errors import RateLimited

DAY_MS = 24 * 3600 * 1000

# Part of state.py's _BEGIN_TURN. KEYS[7..9]: this rate window's count, the previous window's,
# today's. ARGV[3]: now ms; ARGV[4..7]: rate max (0: off), rate window ms, daily max (0: off),
# day ms. CHECK returns {0, ms until the window resets, 'rate' | 'daily'} when refused; COUNT
# (once the lock is taken) counts the turn.
CHECK_LUA = """
local now, rate, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local daily, day = tonumber(ARGV[6]), tonumber(ARGV[7])
if rate > 0 then
  local weight = 1 - (now % window) / window
  local before = math.floor(weight * tonumber(redis.call('GET', KEYS[8]) or '0'))
  if before + tonumber(redis.call('GET', KEYS[7]) or '0') >= rate then
    return {0, window - now % window, 'rate'}
  end
end
if daily > 0 and tonumber(redis.call('GET', KEYS[9]) or '0') >= daily then
  return {0, day - now % day, 'daily'}
end
"""
COUNT_LUA = """
if rate > 0 and redis.call('INCR', KEYS[7]) == 1 then
  redis.call('PEXPIRE', KEYS[7], window * 2 + 1000)
end
if daily > 0 and redis.call('INCR', KEYS[9]) == 1 then
  redis.call('PEXPIRE', KEYS[9], day)
end
"""


@dataclass(frozen=True)
class LimitCheck:
    """The keys and arguments CHECK_LUA and COUNT_LUA take for one user at one time."""

    keys: list[str]
    args: list[str]


NO_LIMITS = LimitCheck([], ["0", "1", "0", "1"])  # delete, fork: they are not turns

_REFUSALS = {
    "rate": ("rate_limited", "too many turns; slow down"),
    "daily": ("daily_limit_reached", "the daily number of turns is used up"),
}


class TurnLimits:
    def __init__(self, prefix: str, rate: tuple[int, int] | None, per_day: int | None) -> None:
        self.prefix = prefix
        self.rate = rate  # (turns, seconds)
        self.per_day = per_day

    def check(self, user: str, now_ms: int) -> LimitCheck:
        turns, seconds = self.rate or (0, 1)
        window = seconds * 1000
        index = now_ms // window
        return LimitCheck(
            [f"{self.prefix}:rl:{user}:{index}", f"{self.prefix}:rl:{user}:{index - 1}",
             f"{self.prefix}:daily:{user}:{now_ms // DAY_MS}"],
            [str(turns), str(window), str(self.per_day or 0), str(DAY_MS)])

    @staticmethod
    def refused(which: str, reset_ms: int) -> RateLimited:
        code, message = _REFUSALS[which]
        wait = max(1, math.ceil(int(reset_ms) / 1000))
        return RateLimited(f"{message}: retry in {wait} s", retry_after=wait, code=code)
