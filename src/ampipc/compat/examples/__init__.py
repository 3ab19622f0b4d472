"""Firmware programs ported to Python with the names of `ampipc.compat` only."""

from __future__ import annotations

__all__: list[str] = []
