"""Plumbing every layer above the core may share: owned background tasks, file watching,
and the context log lines are written in (the current trace id).

Imports nothing else of authz.
"""
