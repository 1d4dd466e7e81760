"""Interfaces: the CLI (and later the REST API, scheduler service and web UI)."""
