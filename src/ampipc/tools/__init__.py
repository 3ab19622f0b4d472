"""Tools built on the library: ``ampipc top`` (live view) and the region snapshot it draws."""

from __future__ import annotations

__all__: list[str] = []
