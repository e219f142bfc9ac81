"""The package's version, in one place: the root package exports it, the front
announces it in HELLO and STATUS, and pyproject.toml reads it from here."""

__version__ = "0.1.0"
