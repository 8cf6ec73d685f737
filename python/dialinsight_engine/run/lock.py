"""One writer per run folder: an exclusive lock on `runs/<project>/.lock`.

The lock is an `fcntl.flock` on the file, so the kernel releases it when the holder dies
(kill -9 included). The holder writes who it is into the file (pid, host, process start,
since, command) so a second process can say who is in the way. A lock left with holder
details by a process that died is stale: the next process takes it over and logs a line.
The details alone (without the flock) also guard filesystems where flock is not enforced:
a live process on this host that wrote them still counts as the holder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import UserError

LOCK_FILE = ".lock"
LOG = logging.getLogger("dialinsight_engine.lock")
_held: dict[Path, int] = {}  # run folders this process holds -> nesting depth (re-entrant)


class RunLocked(UserError):
    """Another process is writing to this run folder (exit 2)."""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22, counted after the command name, which is in parentheses and may hold spaces
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    now = _process_start(pid)
    return started is None or now is None or now == started


def _describe(holder: dict[str, Any]) -> str:
    command = f" ({holder['command']})" if holder.get("command") else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}{command}"


class RunLock:
    """`with RunLock(run_dir, "apply specs/x.toml"):` ... ; raises RunLocked when held."""

    def __init__(self, run_dir: Path, command: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.command = command or " ".join(["dialengine", *sys.argv[1:]])
        self._fd: int | None = None
        self._nested = False
        self.took_over: str | None = None  # the stale holder taken over, described

    def _read_holder(self, fd: int) -> dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        try:
            holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"unreadable": True}
        return holder if isinstance(holder, dict) else {"unreadable": True}

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = self.run_dir.resolve()
        if key in _held:  # this process already holds it (apply calling a writer inside)
            _held[key] += 1
            self._nested = True
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise self._locked(self._read_holder(fd)) from None
            self._check_leftover(self._read_holder(fd))
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid()),
                  "since": datetime.now(UTC).isoformat(timespec="seconds"), "command": self.command}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode("utf-8"), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)  # closing drops the flock too
            raise
        self._fd = fd
        _held[key] = 1
        return self

    def _check_leftover(self, holder: dict[str, Any]) -> None:
        """We hold the flock; details left in the file mean the last holder did not release."""
        pid = holder.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return  # empty (released cleanly) or not ours to interpret
        same_host = holder.get("host") == socket.gethostname()
        if same_host and pid != os.getpid() and _alive(pid, holder.get("started")):
            raise self._locked(holder)  # flock not enforced here (some network filesystems)
        why = "that process is gone" if same_host else "no process holds its lock"
        self.took_over = f"{_describe(holder)}: {why}"
        LOG.warning("taking over the stale lock on %s left by %s", self.run_dir, self.took_over)

    def _locked(self, holder: dict[str, Any]) -> RunLocked:
        who = _describe(holder) if holder.get("pid") else "another process"
        return RunLocked(f"run folder {self.run_dir} is in use by {who}",
                         file=self.path, hint="wait for it to finish or stop it, then rerun")

    def release(self) -> None:
        key = self.run_dir.resolve()
        if self._nested:
            _held[key] -= 1
            self._nested = False
            return
        if self._fd is None:
            return
        _held.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # an empty file: released cleanly, nothing stale
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

