"""Buffer arguments of the compat layer: any object with the buffer protocol (bytes, bytearray,
memoryview, array.array, numpy arrays...), typed as `typing_extensions.Buffer` for type checkers
only (the package itself needs nothing outside the standard library)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

    from .._native import Buffer  # typing_extensions.Buffer, plus numpy arrays on Python < 3.12

    WritableBuffer: TypeAlias = Buffer  # the type system has no "writable" buffer; checked at run time

__all__ = ["Buffer", "WritableBuffer", "as_view", "as_writable_view"]


def as_view(data: Buffer) -> memoryview:
    """A flat byte view of `data` (TypeError if it is not a buffer)."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]  # numpy arrays typed for Python < 3.12 (_native.Buffer)
    except TypeError:
        raise TypeError(f"expected a bytes-like object (the buffer protocol), not {type(data).__name__}") from None
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def as_writable_view(data: Buffer) -> memoryview:
    """A flat writable byte view of `data` (TypeError if it is read-only or not a buffer)."""
    view = as_view(data)
    if view.readonly:
        raise TypeError(f"expected a writable buffer (bytearray, memoryview, array...), not a read-only {type(data).__name__}")
    return view
