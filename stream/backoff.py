"""Exponential back-off with jitter and a cap, for anything that reconnects forever (cameras, re-stream targets).

Why jitter: after a switch or a power cut, every camera of a site drops at once; without jitter
they would all retry in lock-step against the same recovering network. Why a low cap: a retry is
one cheap RTSP handshake, and the cap bounds how long a camera stays dark after its server is back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays ``base``, 2·base, 4·base … up to ``cap`` seconds, each scaled by a random factor in
    [1 − jitter, 1 + jitter]. ``level`` tells callers when the delay has grown, so each level is
    logged once instead of every attempt."""

    base: float = 1.0
    cap: float = 4.0
    jitter: float = 0.2
    attempts: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or not 0 <= self.jitter < 1:
            raise ValueError(
                f"back-off needs 0 < base <= cap and 0 <= jitter < 1, got base {self.base}, "
                f"cap {self.cap}, jitter {self.jitter}"
            )

    @property
    def level(self) -> int:
        """0 for the first attempt; grows until the cap is reached, then stays."""
        level, delay = 0, self.base
        while level < self.attempts and delay < self.cap:
            level, delay = level + 1, delay * 2
        return level

    def next_delay(self) -> float:
        """The wait before the next attempt (and count that attempt)."""
        delay = min(self.cap, self.base * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return delay * self._rng.uniform(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        self.attempts = 0
