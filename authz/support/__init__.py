"""Plumbing every layer above the core may share: owned background tasks and file watching.

Imports nothing else of authz.
"""
