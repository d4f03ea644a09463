"""Bridges to other toolkits (MTEB, ...). Each submodule imports its toolkit lazily; install the extra."""
