"""What the command line shows on the terminal, and where log lines go.

Library modules log with ``logging`` / absl as they always did; only ``main`` calls
``setup``, which decides where the records go:

- this package's records at INFO and above, and other libraries' (absl, orbax, jax,
  Python warnings) at WARNING and above (at absl's ``--verbosity`` level when given)
  go to ``WORKDIR/log.txt`` (appended, one header line per run). Until the run has passed
  its checks (``open_log``) the lines are held in memory, so a refused run writes
  nothing into the workdir;
- the terminal shows stage headers and summaries (``say``), progress bars, and this
  package's own warnings and errors, one line each. absl's ``--verbosity=N``,
  ``--alsologtostderr`` or ``--logtostderr`` bring every record at that level back to
  the terminal, in absl's format.

``watch_ctrl_c`` makes Ctrl-C end the process with one line and exit status 130, also
while the main thread is inside a long compilation; during training (where
``train.stop_flag`` handles SIGINT: save, then stop) it says what the first Ctrl-C does.

``guard_streams`` makes every write to stdout/stderr safe: once the reader is gone
(``| tee`` or ``| head`` ended, e.g. killed with the rest of a SLURM job's process
group, or the terminal closed) the stream is pointed at ``os.devnull`` and the run goes
on, so that a SIGTERM still finishes the step and saves its checkpoint.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import sys
import threading
import time
from typing import Any

LOG_FILE = "log.txt"
EXIT_INTERRUPTED = 130                 # 128 + SIGINT, the shell's convention
FILE_ONLY = {"terminal": False}        # ``logging.x(..., extra=FILE_ONLY)``: not shown on the terminal

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_state: dict[str, Any] = {"stage": None, "file": None}
_exit_lock = threading.Lock()


def _write(text: str, stream: Any) -> None:
    """One line above any progress bar (tqdm clears and redraws the bars around it)."""
    from tqdm import tqdm
    tqdm.write(text, file=stream)
    stream.flush()


class GuardedStream:
    """A text stream whose ``write``/``flush`` never raise: on the first failure (a
    broken pipe, a closed terminal, a closed file) its file descriptor is pointed at
    ``os.devnull`` (so the interpreter's exit flush cannot fail either) and later
    writes are dropped. Every other attribute is the wrapped stream's."""

    _LOST = (errno.EPIPE, errno.EIO, errno.EBADF, errno.ECONNRESET)

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.lost = False

    def _lose(self) -> None:
        self.lost = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as e:
            if e.errno not in self._LOST:
                raise
        except ValueError:          # "I/O operation on closed file"
            pass
        self._lose()
        return None

    def write(self, text: str) -> int:
        if not self.lost:
            self._guard(self._stream.write, text)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            self._guard(self._stream.flush)

    def isatty(self) -> bool:
        return not self.lost and bool(self._guard(self._stream.isatty))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_streams() -> None:
    """Wraps ``sys.stdout`` and ``sys.stderr`` in ``GuardedStream`` (once): what the
    command line writes can no longer end it with ``BrokenPipeError``."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, GuardedStream):
            setattr(sys, name, GuardedStream(stream))


def say(text: str) -> None:
    """A stage header (``[i/n] ...``) or summary line on stdout."""
    if re.match(r"\[\d+/\d+\] ", text):
        _state["stage"] = text
    _write(text, sys.stdout)


def ours(record: logging.LogRecord) -> bool:
    """Whether ``record`` comes from this package (its logger or its source file)."""
    return record.name.split(".")[0] == "rsc_jax" or record.pathname.startswith(_PACKAGE)


class _LogFile(logging.Handler):
    """Writes records to the log file; holds them in memory until the file is opened.

    Records of this package at its level (INFO), and other libraries' (orbax, absl,
    jax) only from WARNING up unless ``libraries`` (absl's verbosity flags) is lower."""

    def __init__(self, libraries: int = logging.WARNING) -> None:
        super().__init__()
        self.libraries = libraries
        from absl import logging as absl_logging
        self.setFormatter(absl_logging.PythonFormatter())
        self.held: list[str] = []
        self.stream: Any = None

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.libraries or ours(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self.stream is None:
                if len(self.held) < 100_000:
                    self.held.append(line)
            else:
                self.stream.write(line + "\n")
        except Exception:   # noqa: BLE001 (logging must never stop the run)
            self.handleError(record)

    def open(self, path: str, header: str) -> None:
        self.acquire()
        try:
            if self.stream is None:
                self.stream = open(path, "a", buffering=1, encoding="utf-8")
                self.stream.write(header + "\n")
                self.stream.writelines(line + "\n" for line in self.held)
                self.held = []
        finally:
            self.release()

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()


class _Terminal(logging.Handler):
    """Records on stderr: this package's warnings as ``warning: ...`` lines, or (when
    absl's verbosity flags ask for it) every record in absl's format."""

    def __init__(self, level: int, everything: bool) -> None:
        super().__init__(level)
        self.everything = everything
        if everything:
            from absl import logging as absl_logging
            self.setFormatter(absl_logging.PythonFormatter())

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "terminal", True):
            return False
        return self.everything or ours(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) if self.everything else f"{record.levelname.lower()}: {record.getMessage()}"
            _write(text, sys.stderr)
        except Exception:   # noqa: BLE001
            self.handleError(record)


def setup(terminal_level: int | None = None) -> None:
    """Routes log records to the (held, then opened) log file: this package's from INFO,
    other libraries' (orbax, absl, jax) from WARNING, or from ``terminal_level`` when
    given (absl's ``--verbosity``); to the terminal only this package's warnings, or
    every record at ``terminal_level`` when given.

    Replaces absl's stderr handler on the root logger (the command line's process only)."""
    from absl import logging as absl_logging
    root = logging.getLogger()
    for h in list(root.handlers):
        if h is absl_logging.get_absl_handler() or isinstance(h, (_LogFile, _Terminal)):
            root.removeHandler(h)
    logging.captureWarnings(True)          # Python warnings (deprecations, ...) to the log file too
    sys.unraisablehook = _log_unraisable   # e.g. asyncio's "Event loop is closed" after a failed orbax read
    file_handler = _LogFile(libraries=terminal_level or logging.WARNING)
    file_handler.setLevel(min(logging.INFO, terminal_level or logging.INFO))
    root.addHandler(file_handler)
    root.addHandler(_Terminal(terminal_level or logging.WARNING, everything=terminal_level is not None))
    root.setLevel(file_handler.level)
    _state["file"] = file_handler


def _log_unraisable(u: Any) -> None:
    logging.info("exception ignored in %r: %s: %s", u.object, getattr(u.exc_type, "__name__", u.exc_type),
                 u.exc_value)


def open_log(workdir: str, header: str, name: str = LOG_FILE) -> str:
    """Starts writing ``WORKDIR/log.txt`` (appending ``header`` and the lines held so far)."""
    path = os.path.join(workdir, name)
    if _state["file"] is not None:
        _state["file"].open(path, header)
    return path


def _flush_logs() -> None:
    if _state["file"] is not None:
        try:
            _state["file"].flush()
        except Exception:   # noqa: BLE001
            pass


def exit_interrupted() -> None:
    """Prints the one line of a Ctrl-C stop and ends the process (status 130) at once:
    no traceback, and no interpreter shutdown racing XLA's or orbax's threads."""
    if not _exit_lock.acquire(blocking=False):   # another thread is already ending the process
        time.sleep(30)
        os._exit(EXIT_INTERRUPTED)
    stage = _state["stage"]
    logging.warning("interrupted by Ctrl-C%s", f" during {stage}" if stage else "", extra=FILE_ONLY)
    try:
        _write(f"interrupted (Ctrl-C){' during ' + stage if stage else ''}; the files written before are kept",
               sys.stderr)
        sys.stdout.flush()
    finally:
        _flush_logs()
        os._exit(EXIT_INTERRUPTED)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def watch_ctrl_c(grace_s: float = 1.5) -> None:
    """Ctrl-C ends the process with one line (``exit_interrupted``), within ``grace_s``
    even while the main thread sits in a long C++ call such as an XLA compilation.

    A watcher thread reads the signal wake-up pipe. Outside training the main thread
    normally raises ``KeyboardInterrupt`` first (``main`` catches it); if it has not
    within ``grace_s``, the watcher ends the process itself. During training (the SIGINT
    handler is ``train.stop_flag``'s, marked ``graceful``) the first Ctrl-C asks the loop
    to save and stop, and the watcher says so; a second one ends the process at once.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(r, grace_s), name="ctrl-c-watcher", daemon=True).start()


def _watch(fd: int, grace_s: float) -> None:
    asked = False
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if signal.SIGINT not in data:
            continue
        if getattr(signal.getsignal(signal.SIGINT), "graceful", False) and not asked:
            asked = True
            _write("Ctrl-C: training stops after this step and saves a checkpoint (Ctrl-C again quits at once, "
                   "keeping the last checkpoint)", sys.stderr)
            continue
        time.sleep(grace_s)           # the main thread usually gets there first
        exit_interrupted()
