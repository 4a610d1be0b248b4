"""A worker in a child process of its own, supervised by its parent over a pipe.

What a part needs when it must not share the pipeline's process (an engine that never gives
its memory back, a library that must be imported fresh): the child is started with ``spawn``,
builds its worker, says ``ready``, then answers one request at a time. The parent's handle,
:class:`ChildProcess`:

- forwards the child's progress (``progress(n)`` in the child moves the parent's bar);
- turns the child's errors into the parent's: an :class:`InputError` raised in the child arrives
  as the same ``InputError`` (the child stays ready for the next request), anything else as one
  :class:`ChildError` with the end of the child's log, and the child is stopped;
- notices the child's death (a crash, ``kill -9``) and says so instead of hanging;
- stops the child's whole process group (the worker's own subprocesses too), on request, when
  the parent exits, and, through :func:`exit_with_parent` in the child, when the parent is
  killed.

Who uses it: the vLLM engine (:mod:`calm_rag.sampling.vllm_backend`, one child per engine, and
:mod:`calm_rag.sampling.data_parallel` for several). The training launcher
(:mod:`calm_rag.training.launch`) does not: it runs a program, ``accelerate launch``, not a
Python worker answering requests, and that program's ranks are started by torchrun in sessions
of their own, out of reach of a process-group kill. A spawned child between the pipeline and
``accelerate`` would only add a process; the launcher starts the program in a group of its own,
stops that group as :meth:`ChildProcess.stop` does, and each rank watches the pipeline with the
same :func:`exit_with_parent`.

The child is started with ``spawn``, which re-imports the parent's main script: scripts that
start a child keep their work under ``if __name__ == "__main__":``. The worker factory must be a
module-level callable (it crosses to the child by name).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.util  # registers its exit hook (it joins children) before ours
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from calm_rag.errors import InputError

STOP_WAIT_S = 30  # a clean shutdown takes a few seconds; then the group is killed
Progress = Callable[[int], None]


class Worker(Protocol):
    """What runs in the child: built from the config by the factory, then asked requests."""

    info: dict[str, Any]  # sent to the parent with "ready"

    def handle(self, command: str, payload: Any, progress: Progress) -> Any: ...

    def shutdown(self) -> None: ...


class ChildError(RuntimeError):
    """The child failed (an error other than the user's, or its death)."""

    def __init__(self, message: str, kind: str = "error", module: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.module = kind, module  # kind "missing": ``module`` cannot be imported


class ChildProcess:
    """The parent's handle on one child: start it, send it requests, stop it (and its group).

    ``label`` names the child in errors ("the vLLM engine process exited ..."); ``log_name``
    names whose log it keeps. The child's output goes to a temporary log file unless
    ``verbose``; the file is removed on a clean stop and kept (and named) after a failure.
    """

    def __init__(self, factory: Callable[[Any], Worker], config: Any, *,
                 name: str = "calm-rag-child", label: str = "child",
                 log_name: str = "the child", verbose: bool = False) -> None:
        self.factory, self.config = factory, config
        self.name, self.label, self.log_name, self.verbose = name, label, log_name, verbose
        self.process: Any = None
        self.conn: Any = None
        self.log_path: str | None = None
        self.info: dict[str, Any] = {}

    def start(self, on_wait: Callable[[], None] | None = None) -> dict[str, Any]:
        """Start the child and wait until its worker is built; return the worker's info.

        ``on_wait`` is called about four times a second meanwhile (an elapsed-time display).
        """
        if not self.verbose:
            handle, self.log_path = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
            os.close(handle)
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=_child_main, name=self.name,
            args=(child_conn, self.factory, self.config, self.log_path, os.getpid()))
        self.process.start()
        child_conn.close()  # so that the child's death reads as EOF here
        # Exit hooks run last-registered first: this one stops the child before
        # multiprocessing's would wait for it to end on its own (forever).
        atexit.register(self.stop)
        try:
            self.info = self._receive(on_wait=on_wait, starting=True)
        except BaseException:
            self.stop(wait=0)  # interrupted, or already stopped by the error being raised
            raise
        return self.info

    def request(self, command: str, payload: Any,
                on_progress: Progress | None = None) -> Any:
        """Send one request and return the child's answer."""
        if not self.alive():
            raise self._died()
        self.conn.send((command, payload))
        try:
            return self._receive(on_progress=on_progress)
        except InputError:
            raise  # the child refused the request and is ready for the next one
        except BaseException:
            # Interrupted (or failed, already stopped): the child's late answer must not be
            # read as the next request's.
            self.stop(wait=0)
            raise

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def _receive(self, *, on_progress: Progress | None = None,
                 on_wait: Callable[[], None] | None = None, starting: bool = False) -> Any:
        """The child's answer; its progress goes to ``on_progress``, its death or error
        raises here."""
        while True:
            try:  # OSError, ValueError: stopped meanwhile by another thread (an interrupt)
                if not self.conn.poll(0.25):
                    if not self.process.is_alive() and not self.conn.poll():
                        raise self._died()
                    if on_wait is not None:
                        on_wait()
                    continue
                kind, payload = self.conn.recv()
            except (EOFError, OSError, ValueError, AttributeError):
                raise self._died() from None
            if kind == "progress":
                if on_progress is not None:
                    on_progress(payload)
            elif kind == "error":
                raise self._error(payload, starting)
            else:
                return payload

    def _error(self, payload: dict[str, Any], starting: bool) -> Exception:
        """The child's failure as the parent's error: InputError for the user's mistakes."""
        if payload["kind"] == "input":
            if starting:
                self.stop()  # the worker was never built: the child has ended
        elif payload["kind"] == "missing":
            self.stop()
        else:
            payload = {**payload, "message": payload["message"] + self.log_tail()}
            self.stop(keep_log=True)  # a worker that raised may be half-dead: start afresh
        return error_from(payload, self.label)

    def _died(self) -> ChildError:
        if self.process is None:
            return ChildError(f"the {self.label} process was stopped")
        self.process.join(timeout=5)
        code = self.process.exitcode
        why = f" (killed by signal {-code})" if code is not None and code < 0 else ""
        message = f"the {self.label} process exited with code {code}{why}{self.log_tail()}"
        self.stop(keep_log=True)
        return ChildError(message)

    def log_tail(self, lines: int = 25) -> str:
        """The end of the child's log, to append to an error message."""
        if self.log_path is None:
            return f" ({self.log_name}'s log is above)"
        try:
            text = Path(self.log_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.rstrip().splitlines()[-lines:])
        return f"; the end of {self.log_name}'s log ({self.log_path}):\n{tail}" if tail else ""

    def stop(self, keep_log: bool = False, wait: float = STOP_WAIT_S) -> None:
        """Ask the child to shut its worker down (for ``wait`` seconds at most), then end
        whatever is left of its process group."""
        atexit.unregister(self.stop)
        process, self.process = self.process, None
        if process is None:
            return
        if process.is_alive() and wait > 0:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("close", None))
            process.join(timeout=wait)
        if hasattr(os, "killpg"):
            # The child leads its own group, with the worker's own processes in it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if process.is_alive():  # stopped before it could make its group
            process.kill()
        process.join(timeout=5)
        self.conn.close()
        if self.log_path is not None and not keep_log:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)


# ----------------------------------------------------------------------------- the child


def _child_main(conn: Any, factory: Callable[[Any], Worker], config: Any,
                log_path: str | None, parent: int) -> None:
    """The child's main loop: build the worker, answer requests until ``close`` or EOF."""
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)  # a group of its own, which the worker's processes join: ended as one
    exit_with_parent(parent, whole_group=True)
    _redirect_output(log_path)
    try:
        worker = factory(config)
    except BaseException as exc:  # whatever it is, the parent must hear of it
        conn.send(("error", describe_error(exc)))
        return
    conn.send(("ready", dict(getattr(worker, "info", None) or {})))

    def progress(n: int = 1) -> None:
        conn.send(("progress", n))

    while True:
        try:
            command, payload = conn.recv()
        except EOFError:  # the parent is gone
            break
        if command == "close":
            break
        try:
            conn.send(("done", worker.handle(command, payload, progress)))
        except Exception as exc:  # reported to the parent, which raises it
            conn.send(("error", describe_error(exc)))
    worker.shutdown()


def error_from(described: dict[str, Any], label: str) -> Exception:
    """The parent's exception for an error described by :func:`describe_error` in the worker
    called ``label``: the same InputError, or a ChildError."""
    if described["kind"] == "input":
        return InputError(described["message"], path=described["path"], line=described["line"],
                          field=described["field"], hint=described["hint"])
    if described["kind"] == "missing":
        return ChildError(described["message"], kind="missing", module=described["module"])
    return ChildError(f"{label} failed: {described['message']}")


def describe_error(exc: BaseException) -> dict[str, Any]:
    """An exception as plain data (it crosses a pipe, and not every exception pickles)."""
    described: dict[str, Any] = {"kind": "error", "message": f"{type(exc).__name__}: {exc}",
                                 "path": None, "line": None, "field": None, "hint": None,
                                 "module": None}
    if isinstance(exc, InputError):
        described |= {"kind": "input", "message": exc.message, "path": exc.path,
                      "line": exc.line, "field": exc.field, "hint": exc.hint}
    elif isinstance(exc, ImportError) and exc.name:
        described |= {"kind": "missing", "message": str(exc), "module": exc.name}
    return described


def _redirect_output(log_path: str | None) -> None:
    """Send the child's output (and its subprocesses', which inherit it) to the log file."""
    if log_path is not None:
        handle = os.open(log_path, os.O_WRONLY | os.O_APPEND)
        os.dup2(handle, 1)
        os.dup2(handle, 2)
        os.close(handle)


def exit_with_parent(parent: int, *, whole_group: bool = False) -> None:
    """End this process (with ``whole_group``, its whole process group) once the process
    ``parent`` is gone, ``kill -9`` included: a watcher thread looks every second.

    ``parent`` need not be this process's own parent (a launched rank watches the pipeline,
    which is its grandparent's parent).
    """
    direct = os.getppid() == parent  # then watched by the parent id, which no reuse fools

    def gone() -> bool:
        return os.getppid() != parent if direct else not process_alive(parent)

    def watch() -> None:
        while not gone():
            time.sleep(1)
        if whole_group and hasattr(os, "killpg"):
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="calm-rag-parent-watch", daemon=True).start()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs: not gone, and not a zombie its own parent has not reaped yet."""
    if not Path("/proc/self/stat").is_file():  # no /proc here: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone else's process, alive
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
