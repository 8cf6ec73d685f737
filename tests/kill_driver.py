"""Runs `dialengine apply` many times without paying Python's start-up each time: imports the
engine and its plugins once, then forks one child per run, which runs the real CLI and either
finishes or SIGKILLs itself at its fault point (DIALENGINE_FAULT).

    python kill_driver.py JOBS.json RESULTS.json

JOBS: [{"args": ["apply", SPEC, ...], "fault": NAME or null, "log": PATH}, ...] in order;
RESULTS: [exit status per job] (negative: killed by that signal). The parent never runs a
Polars computation, so no worker pool exists yet when it forks.
"""

from __future__ import annotations

import json
import os
import sys


def run_child(args: list[str], fault: str | None, log: str) -> int:
    pid = os.fork()
    if pid == 0:  # the child: the CLI exactly as `dialengine ARGS` runs it
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.environ.pop("DIALENGINE_FAULT", None)
            if fault:
                os.environ["DIALENGINE_FAULT"] = fault
            from dialinsight_engine.cli import main

            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> None:
    jobs = json.loads(open(sys.argv[1], encoding="utf-8").read())
    import dialinsight_engine.cli  # noqa: F401 - imported once, before any fork
    from dialinsight_engine.plugins import get_registry

    get_registry()  # entry points loaded once too
    results = [run_child(job["args"], job.get("fault"), job["log"]) for job in jobs]
    with open(sys.argv[2], "w", encoding="utf-8") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    main()
