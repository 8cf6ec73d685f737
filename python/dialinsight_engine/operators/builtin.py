"""Old name of `operators.evol` (renamed so that `builtins/` is the only "builtin": the
modules that register what ships); kept for plugins that import operator classes from here."""

from .evol import (
    BUILTIN_OPERATORS,
    DEFAULT_OPERATORS,
    AddConstraints,
    Breadth,
    Concretise,
    Deepen,
    IncreaseReasoning,
    Template,
    TemplateConfig,
)

__all__ = ["BUILTIN_OPERATORS", "DEFAULT_OPERATORS", "AddConstraints", "Breadth", "Concretise", "Deepen",
           "IncreaseReasoning", "Template", "TemplateConfig"]
