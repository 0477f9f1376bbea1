"""Ctrl-C, SIGTERM and SIGHUP during training: finish the step (or the epoch's validation), save, stop; a second
Ctrl-C stops at once.

SIGHUP is what a process gets when its terminal closes (an ssh session dropped, a terminal window shut): by
default it kills the process on the spot, with nothing saved or logged and the run folder's `.lock` left
behind. It is handled as SIGTERM is, where the platform has it (not on Windows), unless the process was started
ignoring it (nohup): then it stays ignored.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any


#: The signals that ask a run to save and stop: SIGHUP (a closed terminal) where the platform has it.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

#: Signals closer together than this are one request (see `interrupt_requests`).
DOUBLE_SIGNAL_SECONDS = 1.0


class StoppedAtOnce(KeyboardInterrupt):
    """A second Ctrl-C stopped training at once, without saving; the message says what was kept.

    A KeyboardInterrupt, as the user asked: `except Exception` does not swallow it.
    The CLI prints nothing more and exits with status 130 (128 + SIGINT).
    """


class SecondCtrlC(KeyboardInterrupt):
    """What `interrupt_requests`' handler raises for a second Ctrl-C; the trainer turns it into `StoppedAtOnce`.

    Its own class so that the trainer tells it from any other KeyboardInterrupt (one that a notebook's code, an
    observer or a signal.alarm handler raised): only this one may be called "a second Ctrl-C".
    """


def _signals_to_handle() -> list[int]:
    """`STOP_SIGNALS`, less a SIGHUP the process was started ignoring: nohup ignores it so that a closed terminal
    does not stop the command, and a run that handled it would stop (saved) at the very logout nohup was for."""
    hangup = getattr(signal, "SIGHUP", None)
    return [sig for sig in STOP_SIGNALS if not (sig == hangup and signal.getsignal(sig) is signal.SIG_IGN)]


@contextlib.contextmanager
def interrupt_requests(trainer: Any) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP ask the trainer to finish its step (or validation), save and stop; a second Ctrl-C stops
    at once: it raises `SecondCtrlC`, which the trainer turns into `StoppedAtOnce`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if trainer.stop_signal is not None:
            # One request can arrive as several signals at once (a Ctrl-C that reaches a worker from the
            # terminal and from torchrun): only a second Ctrl-C more than DOUBLE_SIGNAL_SECONDS later means
            # "stop now, without saving". torchrun passes a second signal on as SIGTERM, so after a Ctrl-C a
            # later SIGTERM means it too; SIGTERMs alone (a scheduler's) only ever ask to save and stop.
            # A SIGHUP is never "stop now": a terminal closed while the run saves after a Ctrl-C lets it save.
            later = now - trainer.stop_requested_at > DOUBLE_SIGNAL_SECONDS
            if later and signal.SIGINT in (signum, trainer.stop_signal) and signum != getattr(signal, "SIGHUP", None):
                raise SecondCtrlC
            return
        trainer.stop_signal, trainer.stop_requested_at = signum, now
        if trainer.validating:
            when = "this epoch's validation"
        elif trainer.dist.active:
            when = "the steps up to the next log interval (train.log_every)"
        else:
            when = "this step"
        trainer.run_folder.log(f"{signal.Signals(signum).name} received: finishing {when}, then saving and "
                               "stopping (press Ctrl-C again to stop at once, without saving)")

    previous = {sig: signal.signal(sig, request) for sig in _signals_to_handle()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
