"""Progress lines for runs that have no progress bar: output to a file, nohup, a batch scheduler.

A bar needs a terminal; without one, a run used to write a line per epoch
only, and an epoch of a large spec can take many minutes on a CPU: long
enough to look like a hang. `Heartbeat` writes a line at most every
`every` seconds instead, from values the step loop has already read to
the host at its log interval, so it adds no device synchronisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

#: seconds between two lines; a minute keeps a log readable and still shows life
EVERY_SECONDS = 60.0


def _duration(seconds: float) -> str:
    """'45s', '3m05s', '1h02m'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Heartbeat:
    """Says where an epoch is, now and then: 'epoch 3/20: step 120 of 371 (32%), 1m30s in, about 3m08s left'."""

    def __init__(self, log: Callable[[str], None], every: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.every, self.clock = log, EVERY_SECONDS if every is None else every, clock
        self.epoch, self.epochs, self.total, self.first = 0, 0, 0, 0
        self.started = self.last = 0.0

    def start_epoch(self, epoch: int, epochs: int, total_steps: int, first_step: int) -> None:
        """An epoch (or what a resume left of it) begins at `first_step` of `total_steps`."""
        self.epoch, self.epochs, self.total, self.first = epoch, epochs, total_steps, first_step
        self.started = self.last = self.clock()

    def beat(self, done: int, losses: Mapping[str, float]) -> None:
        """`done` steps of the epoch are trained; write a line if `every` seconds passed since the last."""
        now = self.clock()
        if now - self.last < self.every or done >= self.total:  # the epoch's own line follows at its end
            return
        self.last = now
        elapsed = now - self.started
        line = (f"epoch {self.epoch}/{self.epochs}: step {done} of {self.total} ({100 * done // self.total}%), "
                f"{_duration(elapsed)} in")
        if done > self.first:
            line += f", about {_duration(elapsed / (done - self.first) * (self.total - done))} left"
        if losses:
            line += "; loss " + ", ".join(f"{name} {value:.3f}" for name, value in losses.items())
        self.log(line)
