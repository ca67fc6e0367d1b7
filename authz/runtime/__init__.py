"""Wiring and lifecycle: the build step, the app, reload, observation, workers."""
