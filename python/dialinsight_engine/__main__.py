"""`python -m dialinsight_engine` is the `dialengine` command."""

from .cli import main

main()
