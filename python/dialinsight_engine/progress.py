"""A heartbeat for long work: every few seconds, one line with what is done, the rate, the
generated tokens per second (generation stages) and the ETA, to run.log and (when stderr is not a terminal, where the live bar does not show) to the
console, so a piped or logged run never sits silent between "running" and "done"."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

#: seconds between heartbeat lines
INTERVAL = 10.0


class Heartbeat:
    def __init__(self, description: str, total: int | None, *, log: logging.Logger,
                 console: Any = None, interval: float = INTERVAL) -> None:
        self.description, self.total = description, total
        self.log, self.console, self.interval = log, console, interval
        self.done = 0
        self.tokens = 0  # generated (completion) tokens, for generation stages
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval)

    def advance(self, n: int = 1, description: str | None = None, tokens: int = 0) -> None:
        with self._lock:
            self.done += n
            self.tokens += tokens
            if description:
                self.description = description

    def elapsed(self, now: float | None = None) -> float:
        return max((now if now is not None else time.monotonic()) - self.started, 1e-9)

    def token_rate(self, now: float | None = None) -> str:
        """`35.2 tok/s`, or "" before any token was counted."""
        return f"{self.tokens / self.elapsed(now):.1f} tok/s" if self.tokens else ""

    def line(self, now: float | None = None) -> str:
        """`label: 5/16 (31%), 0.42/s, 35.2 tok/s, elapsed 0:00:12, ETA 0:00:26`."""
        with self._lock:
            done, total, description = self.done, self.total, self.description
        elapsed = self.elapsed(now)
        rate = done / elapsed
        parts = [f"{description}: {done}/{total}" if total else f"{description}: {done}"]
        if total:
            parts[0] += f" ({100 * done / total:.0f}%)"
        parts.append(f"{rate:.2f}/s" if rate >= 0.5 else f"{60 * rate:.2f}/min")
        if self.tokens:
            parts.append(self.token_rate(now))
        parts.append(f"elapsed {_clock(elapsed)}")
        if total and done:
            parts.append(f"ETA {_clock((total - done) / rate)}")
        elif total:
            parts.append("ETA unknown (nothing finished yet)")
        return ", ".join(parts)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            text = self.line()
            self.log.info("progress %s", text)
            if self.console is not None and not getattr(self.console, "is_terminal", True):
                self.console.print(text, markup=False, highlight=False)


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))
