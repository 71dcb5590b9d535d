"""Training progress for the terminal while papermill executes a notebook.

In a notebook kernel a tqdm bar is a widget that only the notebook shows, so a terminal running ``make run``
saw papermill's cell counter stand still for the whole training. Inside a kernel the training loops therefore
also write a few plain lines (stage, step, loss, ETA) to the kernel process's own stderr, which is the terminal
papermill was started from; the notebook's output does not get them.

``VLMLAB_TERMINAL_PROGRESS``: unset: on when the kernel's stderr is a terminal and the run is attended (not
``VLMLAB_BATCH=1``, which sweeps and the course set, having their own bars); ``1``: always (to a log file);
``0``: never.
"""
from __future__ import annotations

import os
import sys
import time

ENV = "VLMLAB_TERMINAL_PROGRESS"
INTERVAL_S = 15.0  # at most one line per this many seconds, besides the first and the last


def kernel_terminal() -> int | None:
    """The file descriptor of the terminal behind a notebook kernel's redirected stderr; None outside a kernel
    (a plain process's tqdm bar already reaches its terminal) or when the lines are off (see the module)."""
    fd = getattr(sys.stderr, "_original_stdstream_copy", None)  # ipykernel's OutStream keeps the process's fd
    if not isinstance(fd, int):
        iostream = sys.modules.get("ipykernel.iostream")
        if iostream is None or not isinstance(sys.stderr, iostream.OutStream) or sys.__stderr__ is None:
            return None
        fd = sys.__stderr__.fileno()  # a kernel that does not capture its file descriptors left fd 2 alone
    wanted = os.environ.get(ENV, "").strip()
    if wanted == "0":
        return None
    if wanted == "1":
        return fd
    from .widgets import batch_mode

    return fd if not batch_mode() and os.isatty(fd) else None


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


class TerminalProgress:
    """``update(step, loss)`` after each step of ``total``; prints the first step, then every ``interval``
    seconds, and the last step. Does nothing where :func:`kernel_terminal` finds no terminal."""

    def __init__(self, desc: str, total: int, interval: float = INTERVAL_S):
        self.desc, self.total, self.interval = desc, total, interval
        self.fd = kernel_terminal()
        self.t0 = self.last = time.perf_counter()

    def update(self, step: int, loss: float) -> None:
        if self.fd is None:
            return
        now = time.perf_counter()
        done = step + 1
        if done not in (1, self.total) and now - self.last < self.interval:
            return
        self.last = now
        elapsed = now - self.t0
        if done == self.total:
            tail = f"done in {_duration(elapsed)}"
        else:
            tail = f"ETA {_duration(elapsed / done * (self.total - done))}"
        line = f"vlmlab | {self.desc} | step {done}/{self.total} | loss {loss:.4f} | {tail}\n"
        try:
            os.write(self.fd, line.encode())
        except OSError:  # a closed terminal must not stop the training
            self.fd = None


__all__ = ["TerminalProgress", "kernel_terminal", "ENV"]
