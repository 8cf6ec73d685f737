"""The spec: pydantic models of the TOML file and a loader that reports file:line: key."""

from .loader import check_plugin_refs, load_spec
from .models import Spec

__all__ = ["Spec", "check_plugin_refs", "load_spec"]
