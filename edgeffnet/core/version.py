"""edgeffnet's version: what manifests, records and reports name (pyproject.toml says the same)."""

__version__ = "0.1.0"
