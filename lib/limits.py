"""Per-user limits on turns, with upstash-ratelimit over the same Upstash database:
a sliding window (RATE_LIMIT, e.g. 20 turns per 60 s) and a daily cap (MAX_TURNS_PER_DAY).
Checked once the turn lock is taken, so that only turns that start count (a 409 costs nothing);
a refused request releases the lock again."""

from __future__ import annotations

import math
import time

from upstash_ratelimit import FixedWindow, Ratelimit, SlidingWindow
from upstash_redis import Redis

from lib.errors import RateLimited
from lib.state import call_safely

DAY = 24 * 3600


class TurnLimits:
    def __init__(self, redis: Redis, prefix: str, rate: tuple[int, int] | None,
                 per_day: int | None) -> None:
        self.rate = rate and Ratelimit(redis, SlidingWindow(rate[0], rate[1]), f"{prefix}:rl")
        self.daily = per_day and Ratelimit(redis, FixedWindow(per_day, DAY), f"{prefix}:daily")
        self.description = {"rate": rate, "per_day": per_day}

    def check(self, user: str) -> None:
        """Count one turn for `user`, or raise RateLimited with the seconds to wait."""
        for limiter, code, message in (
            (self.rate, "rate_limited", "too many turns; slow down"),
            (self.daily, "daily_limit_reached", "the daily number of turns is used up"),
        ):
            if not limiter:
                continue
            answer = call_safely(lambda limiter=limiter: limiter.limit(user), attempts=1)
            if not answer.allowed:
                wait = max(1, math.ceil(answer.reset - time.time()))
                raise RateLimited(f"{message}: retry in {wait} s", retry_after=wait, code=code)
