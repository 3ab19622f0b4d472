"""Processing directives: the small typed record one core sends the other with each payload.

Theory of operation
-------------------
The application note's payload-processing use case passes, beside the data, a *directive*: how much
data there is, of which type, and what to do with it. `ProcessingDirective` is that record with a
fixed little-endian wire layout (``DIRECTIVE``, 96 bytes plus up to 64 user bytes)::

    0   u32  magic         "AMDR" (0x52444D41)
    4   u16  version       1
    6   u16  processing    a `Processing` value (0 none, 1 FFT, 2 mean, 3 filter, >= 256 user-defined)
    8   u64  data size     bytes of payload the directive applies to
    16  8s   data type     numpy-style type string, ASCII, NUL padded (``<f4``, ``|u1``, ...)
    24  u32  sequence      the producer's frame number
    28  u16  param count   0..4 parameters used
    30  u16  user length   0..64 bytes of user data that follow the fixed part
    32  4 f64 params       processing parameters (filter taps, window, ...), unused ones 0
    64  32   reserved      zero
    96  user bytes

`decode` checks every field (magic, version, counts, lengths, ASCII type) and raises
`ampipc.ProtocolError` for a record that is malformed, so a value from the other side is never
used unchecked. The record is sans-I/O: bytes in, bytes out.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from ..errors import ProtocolError

__all__ = ["DIRECTIVE", "DIRECTIVE_MAGIC", "MAX_PARAMS", "MAX_USER_BYTES", "Processing", "ProcessingDirective"]

DIRECTIVE_MAGIC = 0x52444D41
DIRECTIVE_VERSION = 1
DIRECTIVE = struct.Struct("<IHHQ8sIHH4d32x")
MAX_PARAMS = 4
MAX_USER_BYTES = 64
_TYPE_BYTES = 8

assert DIRECTIVE.size == 96


class Processing(enum.IntEnum):
    """What the receiving core is asked to do with the payload (values >= 256 are the user's)."""

    NONE = 0
    FFT = 1
    MEAN = 2
    FILTER = 3


@dataclass(frozen=True)
class ProcessingDirective:
    """Data size, data type, processing type and user fields, as the application note describes."""

    data_size: int
    data_type: str
    processing: int = Processing.NONE
    sequence: int = 0
    params: tuple[float, ...] = ()
    user: bytes = field(default=b"")

    def __post_init__(self) -> None:
        if not isinstance(self.data_size, int) or not 0 <= self.data_size < 1 << 64:
            raise ValueError(f"data_size must be an int in 0..2**64-1, not {self.data_size!r}")
        if not isinstance(self.data_type, str) or not self.data_type.isascii() or not 0 < len(self.data_type) <= _TYPE_BYTES:
            raise ValueError(f"data_type must be 1 to {_TYPE_BYTES} ASCII characters, not {self.data_type!r}")
        if not isinstance(self.processing, int) or not 0 <= self.processing < 1 << 16:
            raise ValueError(f"processing must be an int in 0..65535, not {self.processing!r}")
        if not isinstance(self.sequence, int) or not 0 <= self.sequence < 1 << 32:
            raise ValueError(f"sequence must be an int in 0..2**32-1, not {self.sequence!r}")
        if len(self.params) > MAX_PARAMS:
            raise ValueError(f"at most {MAX_PARAMS} params, not {len(self.params)}")
        if not isinstance(self.user, (bytes, bytearray)) or len(self.user) > MAX_USER_BYTES:
            raise ValueError(f"user must be bytes of at most {MAX_USER_BYTES} bytes")
        object.__setattr__(self, "params", tuple(float(p) for p in self.params))
        object.__setattr__(self, "user", bytes(self.user))

    @property
    def processing_name(self) -> str:
        """The `Processing` member's name, or ``user:<n>`` for an application-defined value."""
        try:
            return Processing(self.processing).name
        except ValueError:
            return f"user:{self.processing}"

    def encode(self) -> bytes:
        params = self.params + (0.0,) * (MAX_PARAMS - len(self.params))
        head = DIRECTIVE.pack(
            DIRECTIVE_MAGIC, DIRECTIVE_VERSION, self.processing, self.data_size, self.data_type.encode("ascii"),
            self.sequence, len(self.params), len(self.user), *params,
        )
        return head + self.user

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> ProcessingDirective:
        """Parse a record; `ProtocolError` if anything in it is out of range."""
        if len(data) < DIRECTIVE.size:
            raise ProtocolError(f"a processing directive needs {DIRECTIVE.size} bytes, got {len(data)}")
        magic, version, processing, size, raw_type, sequence, n_params, n_user, *params = DIRECTIVE.unpack_from(data)
        if magic != DIRECTIVE_MAGIC:
            raise ProtocolError(f"not a processing directive (magic {magic:#010x}, expected {DIRECTIVE_MAGIC:#010x})")
        if version != DIRECTIVE_VERSION:
            raise ProtocolError(f"processing directive version {version}; this ampipc reads version {DIRECTIVE_VERSION}")
        if n_params > MAX_PARAMS:
            raise ProtocolError(f"processing directive declares {n_params} params; at most {MAX_PARAMS}")
        if n_user > MAX_USER_BYTES or len(data) != DIRECTIVE.size + n_user:
            raise ProtocolError(
                f"processing directive declares {n_user} user bytes but carries {len(data) - DIRECTIVE.size}"
                f" (at most {MAX_USER_BYTES})"
            )
        type_text = bytes(raw_type).split(b"\0", 1)[0]
        if not type_text or not type_text.isascii():
            raise ProtocolError(f"processing directive has an invalid data type {bytes(raw_type)!r}")
        return cls(
            data_size=size,
            data_type=type_text.decode("ascii"),
            processing=processing,
            sequence=sequence,
            params=tuple(params[:n_params]),
            user=bytes(data[DIRECTIVE.size :]),
        )
