"""Resolve the RUN argument of commands: a spec file (its run folder) or a run folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def resolve_run(arg: str | Path) -> Path:
    """`specs/x.toml` -> runs/<project>; a folder with stage outputs -> itself."""
    path = Path(arg)
    if path.is_file() and path.suffix == ".toml":
        from ..spec import load_spec

        return load_spec(path).run_dir()
    if path.is_dir():
        return path
    raise UserError(f"no run at {arg}: give a spec file or a run folder (runs/<project>)")
