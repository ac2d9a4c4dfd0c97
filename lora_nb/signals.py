"""SIGTERM handled as Ctrl-C, for runs and sweeps.

Cluster schedulers (SLURM, Kubernetes) and ``kill`` stop a process with SIGTERM, a grace period,
then SIGKILL. Within `sigterm_as_interrupt`, SIGTERM raises `Terminated`, a `KeyboardInterrupt`,
so that a run records itself failed and a sweep stops as Ctrl-C stops them. It does not rely on
SIGINT's handler: a process started in the background by a non-interactive shell (``nohup cmd &``,
many batch systems) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

SIGTERM_ERROR = "SIGTERM: stopped by a termination signal (kill, or a cluster scheduler's stop)"
_received = threading.Event()


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (see `sigterm_as_interrupt`)."""

    def __str__(self) -> str:
        return "SIGTERM"


def _raise_terminated(signum, frame) -> None:
    _received.set()
    raise Terminated()


def received() -> bool:
    """Whether SIGTERM arrived in this process within `sigterm_as_interrupt`."""
    return _received.is_set()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises `Terminated` in the main thread. Elsewhere than the main thread
    (where Python allows no handler) and when already installed, it changes nothing."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is _raise_terminated:
        yield
        return
    _received.clear()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
