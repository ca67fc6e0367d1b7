"""Developer tooling: the local stack behind `make run` and the end-to-end tests."""
