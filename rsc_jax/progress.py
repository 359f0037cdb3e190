"""Progress that suits where it goes: bars on a terminal, plain lines in a log file.

``bar(total, desc=...)`` is what training and the evaluators show progress with:

- on a terminal (stderr ``isatty``) or in a Jupyter kernel: a tqdm bar (``tqdm.auto``);
- anywhere else (stderr redirected to a file, piped through ``tee``, a SLURM or
  Kubernetes log): no redrawing ``\\r`` bar but one plain line each ``every_percent``
  per cent of the work (ours: 10), e.g.
  ``train: step 40/220 (18%), loss 0.912, acc 0.703, 21.4 step/s, ETA 8 s``,
  and one at the end. Transient bars (``leave=False``, the per-batch bars inside one
  attack) print nothing there.

Both have tqdm's ``update(n)``, ``set_postfix(**values)``, ``set_postfix_str(s)`` and ``close()``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO

EVERY_PERCENT = 10   # ours: a plain line per 10 % of the work


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal or a notebook shows it: redrawn bars then."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        tty = False
    return tty or _in_notebook()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class LineProgress:
    """tqdm's ``update``/``set_postfix``/``close`` as plain lines (no ``\\r``), one per
    ``every_percent`` per cent of ``total`` and one at the end, on ``file`` (stderr).

    A line: ``DESC: UNIT N/TOTAL (P%), key value, ..., R UNIT/s, ETA T``; R and the ETA
    count from the end of the first update on (so that a first step's compilation does
    not skew them), and only this call's work (a resumed run starts at ``initial``)."""

    def __init__(self, total: int, *, desc: str = "", unit: str = "it", initial: int = 0,
                 every_percent: float = EVERY_PERCENT, file: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.n, self.start = int(total), desc, unit, int(initial), int(initial)
        self.every = max(1, int(total * every_percent / 100)) if total else 1
        self.file = file
        self.postfix: dict[str, Any] = {}
        self.t0: float | None = None    # time and count at the end of the first update
        self.n0 = self.n
        self.next = (self.n // self.every + 1) * self.every
        self.closed = False

    def line(self) -> str:
        """The line the current state is shown as."""
        done = self.n - self.n0
        dt = time.monotonic() - self.t0 if self.t0 is not None else 0.0
        parts = [f"{self.unit} {self.n}/{self.total}" + (f" ({100 * self.n // self.total}%)" if self.total else "")]
        parts += [f"{k} {v}".strip() for k, v in self.postfix.items()]
        if done > 0 and dt > 0:
            rate = done / dt
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.n < self.total:
                parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def _print(self) -> None:
        f = self.file if self.file is not None else sys.stderr
        try:
            print(self.line(), file=f, flush=True)
        except (OSError, ValueError):   # a closed log must not stop the work
            pass

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.t0 is None:
            self.t0, self.n0 = time.monotonic(), self.n
        if self.n >= self.next and self.n < self.total:
            self._print()
            self.next = (self.n // self.every + 1) * self.every

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **values: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **values}

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = {s: ""} if s else {}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n > self.start or self.total == 0:
                self._print()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent:
    """No output (progress off, or a transient bar on a non-terminal)."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *a: Any, **k: Any) -> None:
        pass

    def set_postfix_str(self, *a: Any, **k: Any) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int, *, desc: str = "", unit: str = "it", initial: int = 0, leave: bool = True,
        enabled: bool = True, file: TextIO | None = None) -> Any:
    """A progress display for ``total`` units of work (module docstring): a tqdm bar on a
    terminal or notebook, plain lines elsewhere, nothing when not ``enabled``."""
    if not enabled:
        return _Silent()
    if interactive(file):
        from tqdm.auto import tqdm
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                    file=file)
    if not leave:
        return _Silent()
    return LineProgress(total, desc=desc, unit=unit, initial=initial, file=file)


def wrap(iterable: Iterable, *, total: int, desc: str = "", unit: str = "it", leave: bool = False,
         enabled: bool = True) -> Iterator:
    """``iterable`` with a ``bar`` advanced by one per item."""
    b = bar(total, desc=desc, unit=unit, leave=leave, enabled=enabled)
    try:
        for item in iterable:
            yield item
            b.update(1)
    finally:
        b.close()
