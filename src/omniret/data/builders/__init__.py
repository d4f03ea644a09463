"""Builders of real offline data sets from Debian packages and other redistributable sources."""
