"""Errors the `loraplane` command reports as one line (exit code 2) instead of a traceback."""

from __future__ import annotations


class ServeError(ValueError):
    """What to serve cannot be worked out (no adapters, mixed base models, unknown source...)."""


class ChatError(RuntimeError):
    """The endpoint could not answer (not running, unknown model...); the message says which."""
