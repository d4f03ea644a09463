"""The `omniret` command line: a thin face over the library (one file per command group)."""
