"""Slash-command cogs, one file per feature."""
