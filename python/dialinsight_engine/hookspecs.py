"""Every hook a plugin can implement. Built-ins implement them exactly as third parties do.

A plugin is a module (or object) with functions marked ``@hookimpl`` and is found through the
``dialinsight_engine`` entry-point group::

    [project.entry-points.dialinsight_engine]
    myplugin = "my_package.plugin"

Each ``register_*`` hook returns a list of classes; each class has a unique ``name`` class
attribute and, where it takes parameters, a pydantic model in its ``Config`` class attribute
that validates its section of the spec (errors point at the spec's file and line).
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("dialinsight_engine")
hookimpl = pluggy.HookimplMarker("dialinsight_engine")


@hookspec
def register_readers() -> list[type]:
    """Dialogue readers (`readers.base.Reader` subclasses), chosen by `[data] format`."""


@hookspec
def register_stages() -> list[type]:
    """Pipeline stages (`run.stage.Stage` subclasses), ordered by their `order` number."""


@hookspec
def register_metrics() -> list[type]:
    """Quality metrics (`metrics.base.Metric` subclasses), named in `[quality.metrics.NAME]`."""


@hookspec
def register_operators() -> list[type]:
    """Evolution operators (`operators.base.Operator` subclasses), named in `[evolution]`."""


@hookspec
def register_backends() -> list[type]:
    """Generation backends (`backends.base.Backend` subclasses), named by `[backends.X] plugin`."""


@hookspec
def register_trainers() -> list[type]:
    """Trainers (`train.base.Trainer` subclasses), named by `[train] trainer`."""


@hookspec
def register_evaluators() -> list[type]:
    """Evaluators (`evaluate.base.Evaluator` subclasses), named in `[eval]`."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands or groups to the `dialengine` CLI group passed in."""
