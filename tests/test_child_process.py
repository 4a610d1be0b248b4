"""The child-process supervisor, with a trivial worker (no vLLM): requests and progress, errors
across the pipe, a child's death, and the process group ended with the handle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from calm_rag.errors import InputError
from calm_rag.runtime.child_process import ChildError, ChildProcess, process_alive


class Echo:
    """A worker that echoes, counts progress, fails on request and can start a grandchild."""

    def __init__(self, config: dict) -> None:
        if config.get("fail_start"):
            raise InputError("no such model folder: /nowhere", field="worker.model")
        self.info = {"pid": os.getpid(), "greeting": config["greeting"]}

    def handle(self, command: str, payload, progress):
        if command == "echo":
            for _ in range(payload["steps"]):
                progress(1)
            return {"text": f"{payload['text']}!"}
        if command == "refuse":
            raise InputError("too long", field="worker.max_len", hint="shorten it")
        if command == "crash":
            raise ZeroDivisionError("division by zero in the worker")
        if command == "grandchild":
            # Started by the worker, it sits in the child's process group.
            return {"pid": subprocess.Popen([sys.executable, "-c",
                                             "import time; time.sleep(120)"]).pid}
        if command == "import":
            import calm_rag_no_such_module  # noqa: F401
        raise ValueError(command)

    def shutdown(self) -> None:
        pass


def make_echo(config: dict) -> Echo:
    return Echo(config)


def gone(pid: int, wait: float = 10) -> bool:
    """True once no process ``pid`` is left (zombies of other parents count as gone)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().split(") ")[-1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def child():
    handle = ChildProcess(make_echo, {"greeting": "hi"}, name="calm-rag-test", label="echo")
    yield handle
    handle.stop(wait=0)


def test_requests_progress_and_ready_info(child):
    info = child.start()
    assert info["greeting"] == "hi" and info["pid"] == child.pid != os.getpid()
    steps = []
    assert child.request("echo", {"text": "a", "steps": 3}, steps.append) == {"text": "a!"}
    assert steps == [1, 1, 1]
    assert child.request("echo", {"text": "b", "steps": 0}) == {"text": "b!"}


def test_an_input_error_in_the_child_is_the_same_error_here(child):
    child.start()
    with pytest.raises(InputError) as err:
        child.request("refuse", None)
    assert (err.value.field, err.value.hint, err.value.message) == (
        "worker.max_len", "shorten it", "too long")
    assert child.alive()  # the child refused one request and serves the next
    assert child.request("echo", {"text": "c", "steps": 0}) == {"text": "c!"}


def test_any_other_error_is_one_error_and_the_child_is_stopped(child):
    child.start()
    pid = child.pid
    with pytest.raises(ChildError, match="echo failed: ZeroDivisionError: division by zero"):
        child.request("crash", None)
    assert not child.alive() and gone(pid)


def test_a_missing_module_is_named(child):
    child.start()
    with pytest.raises(ChildError) as err:
        child.request("import", None)
    assert err.value.kind == "missing" and err.value.module == "calm_rag_no_such_module"


def test_an_error_while_starting_arrives_once_and_nothing_is_left():
    handle = ChildProcess(make_echo, {"greeting": "hi", "fail_start": True})
    with pytest.raises(InputError, match="field 'worker.model': no such model folder"):
        handle.start()
    assert handle.process is None


def test_a_killed_child_is_an_error_not_a_hang(child):
    child.start()
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(ChildError, match=r"exited with code -9 \(killed by signal 9\)"):
        child.request("echo", {"text": "x", "steps": 0})


def test_stopping_the_handle_kills_the_process_group(child):
    child.start()
    worker = child.pid
    grandchild = child.request("grandchild", None)["pid"]
    assert os.getpgid(grandchild) == worker  # in the child's group
    child.stop()
    assert gone(worker) and gone(grandchild)
    child.stop()  # twice is harmless


def test_killing_the_parent_ends_the_child(tmp_path):
    """A parent killed with kill -9 leaves no child behind (its watcher ends the group)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "parent.py"
    script.write_text(
        f"import sys, time\nsys.path.insert(0, {root!r})\n"
        "from calm_rag.runtime.child_process import ChildProcess\n"
        "from tests.test_child_process import make_echo\n"
        "if __name__ == '__main__':\n"
        "    handle = ChildProcess(make_echo, {'greeting': 'x'})\n"
        "    handle.start()\n"
        "    print(handle.pid, flush=True)\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline() or 0)
    finally:
        parent.kill()
        parent.wait()
    assert pid, "the parent script failed before its child started"
    assert gone(pid, wait=15)


def test_a_watched_process_is_gone_once_it_ends_even_unreaped():
    """What a launched rank asks of the pipeline it watches (not its own parent)."""
    assert process_alive(os.getpid())
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while process_alive(ended.pid):  # exited, not reaped yet: a zombie counts as gone
        assert time.monotonic() < deadline, "a finished process still reads as running"
        time.sleep(0.05)
    with open(f"/proc/{ended.pid}/stat") as handle:
        assert handle.read().split(") ")[-1].startswith("Z")
    ended.wait()
    assert not process_alive(ended.pid)
