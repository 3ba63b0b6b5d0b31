"""Prospect: competing LLMs, an objective supervisor, and prospect-theory-aligned training."""

__version__ = "0.1.0"
