"""SIGINT / SIGTERM handling that cannot be swallowed.

Python raises KeyboardInterrupt wherever the main thread happens to be when the signal arrives. If that is
inside a weakref callback or a `__del__`, the interpreter prints "Exception ignored ..." and carries on,
as if the user had never pressed Ctrl-C. `InterruptGuard` records every signal in a flag as well as
raising, and `check()` (called at stage boundaries, in training callbacks and right before results are
committed) raises again while the flag is set, so a swallowed interrupt still stops the run before it
replaces anything.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, List, Optional


class Interrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT or SIGTERM; `exit_status` is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_status = 128 + signum
        self.result_complete = False  # set when the signal came after the new result was committed


class InterruptGuard:
    """Install SIGINT/SIGTERM handlers for a `with` block (main thread only; elsewhere it does nothing).

    Inside the block a signal raises `Interrupted` at once and stays recorded: `check()` raises it again
    until the block ends. `deferred()` marks a section that must run to its end (the final renames): a
    signal there is only recorded, and raised by the `check()` after it.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: Optional[int] = None
        self._defer_depth = 0
        self._previous = {}
        self.active = False

    def _handle(self, signum, frame):
        for guard in [self, *_guards]:  # nested guards (the CLI's and run()'s) all see it
            if guard.received is None:
                guard.received = signum
        if self._defer_depth == 0:
            raise Interrupted(signum)

    def check(self) -> None:
        """Raise `Interrupted` when a signal arrived since the guard was installed."""
        if self.received is not None:
            raise Interrupted(self.received)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals in the block are recorded, not raised; `check()` after it raises them."""
        self._defer_depth += 1
        try:
            yield
        finally:
            self._defer_depth -= 1

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue  # ignored on purpose (nohup, a background job): keep it so
                self._previous[signum] = signal.signal(signum, self._handle)
            self.active = True
        _guards.append(self)
        return self

    def __exit__(self, *exc) -> bool:
        _guards.remove(self)
        if self.active:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self.active = False
        return False


_guards: List[InterruptGuard] = []


def check() -> None:
    """Raise `Interrupted` if any installed guard recorded a signal (no-op without a guard)."""
    for guard in list(_guards):
        guard.check()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Defer signals in every installed guard for the block (see `InterruptGuard.deferred`)."""
    with contextlib.ExitStack() as stack:
        for guard in list(_guards):
            stack.enter_context(guard.deferred())
        yield
