"""Built-in plugins. Each module here is an ordinary plugin, loaded through the same
`dialinsight_engine` entry-point group as third-party plugins (see pyproject.toml)."""
