"""Telling an outage of an image host from a bad image.

A download that cannot connect (connection refused, a DNS failure, a connect timeout) after
all its retries is, on its own, indistinguishable from a host that is down. Recording it as a
final ``network_error`` during an outage would let later candidates take its place, and the
dataset would differ for good from an uninterrupted run's. So such a candidate is never
finalised while its host may be down:

- if some other download reached the host while this one was failing, the host is up: the
  candidate is tried once more from the start (the host may just have come back), and a second
  such failure is the image's own (``network_error``, final);
- otherwise the candidate waits and tries again, and when no download has reached the host for
  ``outage_s`` seconds the run stops with :class:`HostUnreachable`. Its candidates stay pending,
  and the same command resumes to the same dataset once the host is back.

Transient faults (resets, 5xx, stalls) are not connection failures: they never count here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class HostUnreachable(Exception):
    """No download reached an image host for the outage window: the run stops, resumable."""

    def __init__(self, host: str, seconds: float, last_error: str) -> None:
        super().__init__(
            f"the image host {host} is unreachable (no connection for {seconds:.0f} s; last "
            f"error: {last_error}); progress is saved: run the same command to resume once "
            "it is back"
        )
        self.host = host


@dataclass
class HostWatch:
    """When each image host was last reached, shared by every consumer of a run."""

    outage_s: float
    started: float = field(default_factory=time.monotonic)
    _last_reached: dict[str, float] = field(default_factory=dict)

    def reached(self, host: str) -> None:
        """A download got an answer (any HTTP status) from ``host``."""
        self._last_reached[host] = time.monotonic()

    def reached_since(self, host: str, moment: float) -> bool:
        return self._last_reached.get(host, float("-inf")) > moment

    def silent_for(self, host: str) -> float:
        """Seconds since ``host`` last answered (or since the run started, if it never did)."""
        return time.monotonic() - max(self._last_reached.get(host, self.started), self.started)
