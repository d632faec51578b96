"""Turn the signals that mean "stop" into an exception, so ``finally`` blocks stop nginx before we exit.

Python only handles SIGINT by itself (KeyboardInterrupt); SIGTERM (``kill``, systemd, ``docker stop``,
supervisord) and SIGHUP (a closed terminal) would end the process at once and leave its nginx running.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(BaseException):
    """Raised in the main thread on a stop signal; a BaseException, like KeyboardInterrupt, so that
    ``except Exception`` handlers do not swallow it."""

    def __init__(self, signo: int) -> None:
        super().__init__(signal.Signals(signo).name)
        self.signo = signo

    @property
    def exit_status(self) -> int:
        """The shell convention for "ended by signal N": 128 + N (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signo


@contextmanager
def stop_on_signals(who: str) -> Iterator[None]:
    """Within the block, the first stop signal raises :class:`Stopped`; later ones are ignored, so that a
    second Ctrl-C cannot interrupt the clean-up the first one started."""
    raised = False

    def handler(signo: int, _frame: object) -> None:
        nonlocal raised
        if raised:
            return
        raised = True
        print(f"{who}: {signal.Signals(signo).name} received, stopping nginx", file=sys.stderr, flush=True)
        raise Stopped(signo)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
