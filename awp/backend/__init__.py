"""Thin appliers between awp and the kernel. Runners are injected so tests can record."""
