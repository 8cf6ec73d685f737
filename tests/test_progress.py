"""The heartbeat: rows done, rate and ETA every few seconds, to the log and to a console that
is not a terminal (piped or redirected), where the live bar does not show."""

from __future__ import annotations

import io
import logging
import time

from rich.console import Console

from dialinsight_engine.progress import Heartbeat


def test_line_reports_done_rate_and_eta() -> None:
    beat = Heartbeat("label", 16, log=logging.getLogger("t"))
    assert beat.line(now=beat.started + 30) == (
        "label: 0/16 (0%), 0.00/min, elapsed 0:00:30, ETA unknown (nothing finished yet)")
    beat.advance(4, description="labelling")
    assert beat.line(now=beat.started + 60) == "labelling: 4/16 (25%), 4.00/min, elapsed 0:01:00, ETA 0:03:00"
    beat.advance(12)
    assert beat.line(now=beat.started + 8) == "labelling: 16/16 (100%), 2.00/s, elapsed 0:00:08, ETA 0:00:00"
    assert Heartbeat("train", None, log=logging.getLogger("t")).line().startswith("train: 0, ")


def test_beats_go_to_the_log_and_a_piped_console(caplog) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    caplog.set_level(logging.INFO, logger="beat")
    with Heartbeat("evolve", 128, log=logging.getLogger("beat"), console=console, interval=0.05) as beat:
        beat.advance(3)
        deadline = time.monotonic() + 10
        while "evolve: 3/128" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "evolve: 3/128 (2%)" in out.getvalue() and "ETA" in out.getvalue()
    assert any(r.getMessage().startswith("progress evolve: 3/128") for r in caplog.records)
    terminal = io.StringIO()
    with Heartbeat("x", 2, log=logging.getLogger("beat"), console=Console(file=terminal, force_terminal=True),
                   interval=0.05):
        time.sleep(0.3)
    assert terminal.getvalue() == ""  # on a terminal the live bar shows progress instead


def test_the_runner_bar_shows_generated_tokens_per_second(caplog) -> None:
    from types import SimpleNamespace

    from dialinsight_engine.run.runner import Runner

    out = io.StringIO()
    fake_runner = SimpleNamespace(console=Console(file=out, force_terminal=True, width=200), quiet=False)
    with Runner._progress(fake_runner, "labelling", 4) as advance:  # type: ignore[arg-type]
        advance(1, tokens=30)
        advance(1, description="labelling again")
        time.sleep(0.3)  # the live bar refreshes ten times a second
    assert "labelling again" in out.getvalue() and "tok/s" in out.getvalue()
