"""Named fault points: the kill tests stop `apply` at an exact moment instead of a timed guess.

`DIALENGINE_FAULT=NAME` (or `NAME@N`: the N-th time that point is reached, counted per
process) makes the process SIGKILL itself at the point called NAME; `NAME` may be a glob
(`stage:*:data-written@3`). Unset, which is always the case outside tests, a point costs one
dictionary lookup. Point names are listed in docs/architecture.md (Runs).
"""

from __future__ import annotations

import fnmatch
import os
import signal
from collections import Counter

ENV = "DIALENGINE_FAULT"
_reached: Counter[str] = Counter()


def point(name: str) -> None:
    """Die here (SIGKILL, as a power cut or the OOM killer would) when DIALENGINE_FAULT names
    this point and this is the requested occurrence."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    pattern, _, nth = wanted.partition("@")
    if not fnmatch.fnmatchcase(name, pattern):
        return
    _reached[pattern] += 1
    if _reached[pattern] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
