"""Structure agreement: a structure shared by two images, described once, checked at attach.

Theory of operation
-------------------
Two firmware images that share a C structure in shared memory silently assume that both compilers
gave it the same size, alignment and field offsets (ST's dual-core examples state the assumption,
nothing checks it). Here a shared structure is described once, either as a ctypes `Structure`
/ `Union` (with ``_pack_``, nested structures, arrays and bit fields, read from ctypes itself) or as
a `Layout` (a list of fields whose offsets are computed as a 32-bit ARM compiler lays them out:
AAPCS natural alignment, ``u64``/``f64`` 8-aligned, ``pack`` like ``#pragma pack(n)``, ``align``
like ``__attribute__((aligned(n)))``). Both reduce to one canonical `StructDescription`: the
structure's size and alignment and, for every member at every depth (dotted paths: ``hdr.len``;
the members of an array of structures are listed for element 0: ``items[0].x``), its offset, size,
effective alignment and type code. The structure's name is kept for messages but is not part of
the layout: two images may call it differently. `fingerprint` is a BLAKE2b-128 hash of the
canonical layout, so equal fingerprints mean equal descriptions (the field order of the
description is canonical: by bit position, then depth, then path).

In the region, `place_struct` allocates one directory object (kind ``hw_struct``)::

    0   u32  magic            "ASTR"; stored last, with a release store: it publishes the rest
    4   u32  version          1
    8   16B  fingerprint      BLAKE2b-128 of the canonical layout
    24  u32  size             of the structure
    28  u32  alignment        of the structure (a power of two, at most 4096)
    32  u32  description len  bytes of the JSON description at offset 64 (at most 64 KiB)
    36  u32  storage offset   from the object's start; aligned to max(alignment, 8) in the region
    64  ...  description      canonical JSON (name, size, alignment, fields)
        ...  storage          the structure's bytes, shared by every image

Who writes which word: the placer writes the header and the description once, before the magic;
afterwards they are constants. The storage belongs to the application (both images read and write
it through the ctypes instance; no word of it is interpreted here). An attacher reads the header
only after it saw the magic, and checks every value against the object's bounds (`CorruptRegion`
naming the field: a damaged or hostile segment may hold anything), recomputes the fingerprint of
the stored description and compares it with the header's. `attach_struct` then compares its own
description with the region's: equal fingerprints give the instance; otherwise `LayoutMismatch`
names the first member that differs in memory order (the lowest address where the two images
disagree; where a whole nested structure differs only in size its first differing member is named),
or the whole structure's size or alignment when every member agrees.

Host caveat: a ctypes description is what the *host's* ctypes computes. Fixed-width types
(``c_uint32``, ``c_int16``, ...) match the Cortex-M on x86-64 and AArch64 hosts; ``c_long`` is 8
bytes on a 64-bit Linux host but 4 on the Cortex-M (it describes an ``i64`` here, so a mismatch
with the firmware's ``long`` is reported, as it should be); pointers, ``c_wchar``, ``c_longdouble``
and big-endian structures are refused. Stores through the instance are plain memory accesses: they
do not pass through the CM7 D-cache model of `ampipc.hw.cache`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, Union, overload

from .. import _layout as L
from ..errors import CorruptRegion, IncompatibleRegion, LayoutMismatch

if TYPE_CHECKING:
    from ..region import ObjectEntry, Region

__all__ = [
    "MAX_DESCRIPTION_BYTES",
    "STRUCT_KIND",
    "FieldLayout",
    "FieldType",
    "Layout",
    "LayoutDifference",
    "StructDescription",
    "StructSpec",
    "attach_struct",
    "compare_layouts",
    "ctype_of",
    "describe",
    "fingerprint",
    "place_struct",
    "read_struct_description",
]

STRUCT_KIND = "hw_struct"
MAX_DESCRIPTION_BYTES = 64 * 1024
MAX_ALIGNMENT = 4096
_MAGIC = 0x52545341  # "ASTR" little-endian
_VERSION = 1
_HEADER = struct.Struct("<II16sIIII")
_HEADER_SIZE = 64  # the description starts here; bytes 40..63 are reserved (zero)
_MIN_STORAGE_ALIGN = 8
_PUBLISH_WAIT = 2.0  # seconds an attacher waits for a placer that allocated but has not published yet
_PERSON = b"ampipc.hw_struct"  # BLAKE2b personalisation: 16 bytes

# canonical scalar type codes -> (size, ctypes type); the size is also the AAPCS alignment
_SCALARS: dict[str, tuple[int, type[ctypes._SimpleCData[Any]]]] = {
    "u8": (1, ctypes.c_uint8), "i8": (1, ctypes.c_int8), "u16": (2, ctypes.c_uint16), "i16": (2, ctypes.c_int16),
    "u32": (4, ctypes.c_uint32), "i32": (4, ctypes.c_int32), "u64": (8, ctypes.c_uint64),
    "i64": (8, ctypes.c_int64), "f32": (4, ctypes.c_float), "f64": (8, ctypes.c_double),
    "bool": (1, ctypes.c_bool), "char": (1, ctypes.c_char),
}
_ALIASES = {
    "uint8_t": "u8", "int8_t": "i8", "uint16_t": "u16", "int16_t": "i16", "uint32_t": "u32", "int32_t": "i32",
    "uint64_t": "u64", "int64_t": "i64", "float": "f32", "double": "f64", "_Bool": "bool",
}
# ctypes simple type characters -> signedness prefix (the size comes from ctypes.sizeof)
_CTYPES_INTEGERS = {"b": "i", "B": "u", "h": "i", "H": "u", "i": "i", "I": "u", "l": "i", "L": "u", "q": "i", "Q": "u"}
_CTYPES_OTHERS = {"f": "f32", "d": "f64", "?": "bool", "c": "char"}

FieldType = Union[str, "Layout", tuple["FieldType", int]]
"""A `Layout` member's type: a scalar code (``"u32"``, ``"uint32_t"``...), a nested `Layout`, or ``(type, count)``."""


# ---- the canonical description --------------------------------------------------------------


@dataclass(frozen=True)
class FieldLayout:
    """One member of a structure (at any depth) as both images must agree on it.

    ``offset`` is from the start of the outermost structure; ``align`` is the member's effective
    alignment (after packing); ``type`` is a code such as ``u16``, ``u8[64]``, ``struct``,
    ``struct[4]``. A bit field has ``bit_width`` > 0: it starts at bit ``bit_offset`` (0-7) of byte
    ``offset`` and ``size`` is its declared type's.
    """

    path: str
    offset: int
    size: int
    align: int
    type: str
    bit_offset: int = 0
    bit_width: int = 0

    @property
    def bit_position(self) -> int:
        """The member's first bit from the start of the structure."""
        return self.offset * 8 + self.bit_offset

    @property
    def depth(self) -> int:
        return self.path.count(".")

    def summary(self) -> str:
        """A firmware engineer's one-line description: ``u16 at offset 4 (size 2, alignment 2)``."""
        if self.bit_width:
            return (f"{self.bit_width}-bit field of a {self.type} at offset {self.offset} bit {self.bit_offset} "
                    f"(alignment {self.align})")
        return f"{self.type} at offset {self.offset} (size {self.size}, alignment {self.align})"


@dataclass(frozen=True)
class StructDescription:
    """The canonical layout of a shared structure. ``name`` is for messages only (not compared)."""

    name: str = field(compare=False)
    size: int
    align: int
    fields: tuple[FieldLayout, ...]

    def member(self, path: str) -> FieldLayout:
        """The member at `path` (``"hdr.len"``). Raises `KeyError`."""
        for f in self.fields:
            if f.path == path:
                return f
        raise KeyError(path)


def _sort_key(f: FieldLayout) -> tuple[int, int, str]:
    return (f.bit_position, f.depth, f.path)


def _canonical(name: str, size: int, align: int, fields: Iterable[FieldLayout]) -> StructDescription:
    return StructDescription(name, size, align, tuple(sorted(fields, key=_sort_key)))


# ---- Layout: a description computed as a 32-bit ARM compiler does --------------------------


def _normalise_type(ftype: Any, where: str) -> FieldType:
    if isinstance(ftype, str):
        code = _ALIASES.get(ftype, ftype)
        if code not in _SCALARS:
            raise ValueError(f"{where}: unknown type {ftype!r}; use one of {', '.join(_SCALARS)} (or a Layout)")
        return code
    if isinstance(ftype, Layout):
        return ftype
    if isinstance(ftype, (tuple, list)) and len(ftype) == 2:
        element, count = ftype
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"{where}: an array needs a positive element count, not {count!r}")
        return (_normalise_type(element, where), count)
    raise ValueError(f"{where}: a field type is a type code, a Layout or (type, count), not {ftype!r}")


def _natural(ftype: FieldType) -> tuple[int, int]:
    """(size, alignment) of a member type, before packing."""
    if isinstance(ftype, str):
        size = _SCALARS[ftype][0]
        return size, size
    if isinstance(ftype, Layout):
        return ftype.size, ftype.alignment
    element, count = ftype
    size, align = _natural(element)
    return size * count, align


def _type_code(ftype: FieldType) -> str:
    dims = ""
    while isinstance(ftype, tuple):
        dims += f"[{ftype[1]}]"
        ftype = ftype[0]
    base = "struct" if isinstance(ftype, Layout) else ftype
    return base + dims


def _innermost(ftype: FieldType) -> tuple[FieldType, int]:
    """The element type of a (possibly multi-dimensional) array and the number of dimensions."""
    dims = 0
    while isinstance(ftype, tuple):
        ftype, dims = ftype[0], dims + 1
    return ftype, dims


@dataclass(frozen=True)
class Layout:
    """A C structure described by its fields, laid out as a 32-bit ARM (AAPCS) compiler does.

    ``fields`` is a sequence of ``(name, type)``: a type is a scalar code (``u8 i8 u16 i16 u32
    i32 u64 i64 f32 f64 bool char``, or ``uint32_t`` and friends), a nested `Layout`, or
    ``(type, count)`` for an array (``("u8", 64)``; ``(("u8", 4), 3)`` is ``uint8_t x[3][4]``).
    ``pack`` caps every member's alignment as ``#pragma pack(n)`` or ctypes' ``_pack_``;
    ``align`` raises the structure's alignment as ``__attribute__((aligned(n)))``. Bit fields
    are not offered here (describe such a structure with ctypes).
    """

    name: str
    fields: Sequence[tuple[str, FieldType]]
    pack: int | None = None
    align: int | None = None
    offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)
    size: int = field(init=False, repr=False, compare=False)
    alignment: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a Layout needs a name, not {self.name!r}")
        if self.pack is not None and (not L.is_power_of_two(self.pack) or self.pack > 16):
            raise ValueError(f"Layout {self.name!r}: pack must be 1, 2, 4, 8 or 16, not {self.pack!r}")
        if self.align is not None and (not L.is_power_of_two(self.align) or self.align > MAX_ALIGNMENT):
            raise ValueError(f"Layout {self.name!r}: align must be a power of two up to {MAX_ALIGNMENT}")
        members: list[tuple[str, FieldType]] = []
        seen: set[str] = set()
        for entry in self.fields:
            if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                raise ValueError(f"Layout {self.name!r}: a field is (name, type), not {entry!r}")
            fname, ftype = entry
            if not isinstance(fname, str) or not fname.isidentifier() or fname.startswith("_ampipc"):
                raise ValueError(f"Layout {self.name!r}: field name {fname!r} is not an identifier")
            if fname in seen:
                raise ValueError(f"Layout {self.name!r}: field {fname!r} appears twice")
            seen.add(fname)
            members.append((fname, _normalise_type(ftype, f"Layout {self.name!r} field {fname!r}")))
        if not members:
            raise ValueError(f"Layout {self.name!r} has no fields")
        offsets, cursor, struct_align = [], 0, 1
        for _, ftype in members:
            size, align = _natural(ftype)
            if self.pack is not None:
                align = min(align, self.pack)
            cursor = L.align_up(cursor, align)
            offsets.append(cursor)
            cursor += size
            struct_align = max(struct_align, align)
        if self.align is not None:
            struct_align = max(struct_align, self.align)
        object.__setattr__(self, "fields", tuple(members))
        object.__setattr__(self, "offsets", tuple(offsets))
        object.__setattr__(self, "alignment", struct_align)
        object.__setattr__(self, "size", L.align_up(cursor, struct_align))

    def _member_align(self, ftype: FieldType) -> int:
        align = _natural(ftype)[1]
        return align if self.pack is None else min(align, self.pack)


def _emit_layout(layout: Layout, prefix: str, base: int, out: list[FieldLayout]) -> None:
    for (fname, ftype), offset in zip(layout.fields, layout.offsets):
        path = prefix + fname
        out.append(FieldLayout(path, base + offset, _natural(ftype)[0], layout._member_align(ftype), _type_code(ftype)))
        element, dims = _innermost(ftype)
        if isinstance(element, Layout):
            _emit_layout(element, path + "[0]" * dims + ".", base + offset, out)


# ---- ctypes descriptions ----------------------------------------------------------------------

_Aggregate = (ctypes.Structure, ctypes.Union)
_BIG_ENDIAN = tuple(
    t for t in (getattr(ctypes, "BigEndianStructure", None), getattr(ctypes, "BigEndianUnion", None))
    if t is not None and t not in _Aggregate
)


def _ctype_code(ctype: Any, where: str) -> str:
    dims = ""
    while isinstance(ctype, type) and issubclass(ctype, ctypes.Array):
        dims += f"[{ctype._length_}]"
        ctype = ctype._type_
    if isinstance(ctype, type) and issubclass(ctype, _Aggregate):
        _check_aggregate(ctype, where)
        return ("union" if issubclass(ctype, ctypes.Union) else "struct") + dims
    if isinstance(ctype, type) and issubclass(ctype, ctypes._Pointer):
        raise ValueError(f"{where} is a pointer: pointers are 4 bytes on the Cortex-M and 8 on a 64-bit host; "
                         "store the address in a c_uint32")
    char = getattr(ctype, "_type_", None)
    if isinstance(char, str) and char in _CTYPES_INTEGERS:
        return f"{_CTYPES_INTEGERS[char]}{8 * ctypes.sizeof(ctype)}{dims}"
    if isinstance(char, str) and char in _CTYPES_OTHERS:
        return _CTYPES_OTHERS[char] + dims
    raise ValueError(f"{where} has ctypes type {getattr(ctype, '__name__', ctype)!r}, which has no fixed size "
                     "shared by the host and the Cortex-M: use a fixed-width type (c_uint32, c_int16, c_float...)")


def _check_aggregate(ctype: type, where: str) -> None:
    if _BIG_ENDIAN and issubclass(ctype, _BIG_ENDIAN):
        raise ValueError(f"{where} is big-endian: the Cortex-M7 and M4 are little-endian")


def _own_fields(ctype: type) -> list[tuple[Any, ...]]:
    """The ctypes fields of `ctype` including those of its ctypes base classes, in layout order."""
    fields: list[tuple[Any, ...]] = []
    for klass in reversed(ctype.__mro__):
        fields.extend(klass.__dict__.get("_fields_", ()))
    return fields


def _emit_ctype(ctype: type, prefix: str, base: int, out: list[FieldLayout]) -> None:
    pack = getattr(ctype, "_pack_", 0) or 0
    for entry in _own_fields(ctype):
        fname, ftype = entry[0], entry[1]
        path = prefix + fname
        code = _ctype_code(ftype, f"field {path!r}")
        descriptor = getattr(ctype, fname)
        align = ctypes.alignment(ftype)
        if pack:
            align = min(align, pack)
        if len(entry) > 2:  # a bit field
            if hasattr(descriptor, "bit_size"):  # Python 3.14 and later
                width, position = descriptor.bit_size, descriptor.byte_offset * 8 + descriptor.bit_offset
            else:  # (bit width << 16) | bit offset in the storage unit that starts at `offset`
                width, position = descriptor.size >> 16, descriptor.offset * 8 + (descriptor.size & 0xFFFF)
            position += base * 8
            out.append(FieldLayout(path, position // 8, ctypes.sizeof(ftype), align, code, position % 8, width))
            continue
        offset = base + descriptor.offset
        out.append(FieldLayout(path, offset, ctypes.sizeof(ftype), align, code))
        element, dims = ftype, 0
        while issubclass(element, ctypes.Array):
            element, dims = element._type_, dims + 1
        if issubclass(element, _Aggregate):
            _emit_ctype(element, path + "[0]" * dims + ".", offset, out)


StructSpec = Union[Layout, "type[ctypes.Structure | ctypes.Union]", StructDescription]
"""What describes a shared structure: a `Layout`, a ctypes `Structure`/`Union` subclass, or a `StructDescription`."""


def describe(spec: StructSpec) -> StructDescription:
    """The canonical description of a `Layout`, a ctypes structure or union, or a description."""
    if isinstance(spec, StructDescription):
        return spec
    out: list[FieldLayout] = []
    if isinstance(spec, Layout):
        _emit_layout(spec, "", 0, out)
        return _canonical(spec.name, spec.size, spec.alignment, out)
    if isinstance(spec, type) and issubclass(spec, _Aggregate):
        _check_aggregate(spec, f"structure {spec.__name__!r}")
        _emit_ctype(spec, "", 0, out)
        if not out or ctypes.sizeof(spec) == 0:
            raise ValueError(f"structure {spec.__name__!r} has no fields")
        return _canonical(spec.__name__, ctypes.sizeof(spec), ctypes.alignment(spec), out)
    raise TypeError(f"describe a shared structure with a Layout or a ctypes Structure/Union class, not {spec!r}")


# ---- fingerprint and the stored form ----------------------------------------------------------


def _layout_json(desc: StructDescription) -> dict[str, Any]:
    return {
        "size": desc.size,
        "align": desc.align,
        "fields": [[f.path, f.offset, f.size, f.align, f.type, f.bit_offset, f.bit_width] for f in desc.fields],
    }


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def fingerprint(spec: StructSpec) -> str:
    """The layout's fingerprint: 32 hex digits of BLAKE2b-128 of the canonical layout (name excluded)."""
    blob = _dumps(_layout_json(describe(spec)))
    return hashlib.blake2b(blob, digest_size=16, person=_PERSON).hexdigest()


def _encode(desc: StructDescription) -> bytes:
    return _dumps({"name": desc.name, **_layout_json(desc)})


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _decode(blob: bytes) -> StructDescription:
    """The description stored in a region; `ValueError` saying what is wrong with it."""
    try:
        data = json.loads(blob.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"it is not JSON text ({e})") from None
    if not isinstance(data, dict) or set(data) != {"name", "size", "align", "fields"}:
        raise ValueError("it does not hold exactly name, size, align and fields")
    name, size, align, raw_fields = data["name"], data["size"], data["align"], data["fields"]
    if not isinstance(name, str) or not name or len(name) > 256:
        raise ValueError(f"its name {name!r} is not a short string")
    if not _is_int(size, 1, 1 << 32) or not _is_int(align, 1, MAX_ALIGNMENT) or not L.is_power_of_two(align):
        raise ValueError(f"its size {size!r} or alignment {align!r} is out of range")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise ValueError("it lists no fields")
    fields: list[FieldLayout] = []
    paths: set[str] = set()
    for i, raw in enumerate(raw_fields):
        if not isinstance(raw, list) or len(raw) != 7:
            raise ValueError(f"field {i} is not a list of 7 values")
        path, offset, fsize, falign, code, bit_offset, bit_width = raw
        if not isinstance(path, str) or not path or len(path) > 512 or path in paths:
            raise ValueError(f"field {i} has a bad or repeated path {path!r}")
        if not isinstance(code, str) or not code or len(code) > 64:
            raise ValueError(f"field {path!r} has a bad type {code!r}")
        if not (_is_int(offset, 0, size - 1) and _is_int(fsize, 1, size) and _is_int(falign, 1, MAX_ALIGNMENT)
                and _is_int(bit_offset, 0, 7) and _is_int(bit_width, 0, 64)):
            raise ValueError(f"field {path!r} has an offset, size, alignment or bit position out of range")
        end_bit = offset * 8 + bit_offset + bit_width if bit_width else (offset + fsize) * 8
        if end_bit > size * 8 or (not bit_width and bit_offset):
            raise ValueError(f"field {path!r} (offset {offset}, size {fsize}) lies outside the {size}-byte structure")
        paths.add(path)
        fields.append(FieldLayout(path, offset, fsize, falign, code, bit_offset, bit_width))
    return _canonical(name, size, align, fields)


# ---- comparison ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutDifference:
    """The first difference between two descriptions (``field`` empty: the whole structure's size or alignment)."""

    structure: str
    field: str
    expected: str  # this image's side
    found: str  # the other side (the region's)
    message: str

    def error(self) -> LayoutMismatch:
        return LayoutMismatch(self.message, structure=self.structure, field=self.field,
                              expected=self.expected, found=self.found)


def _first_differing_path(mine: dict[str, FieldLayout], theirs: dict[str, FieldLayout]) -> str | None:
    def key(path: str) -> tuple[int, int, str]:
        positions = [f.bit_position for f in (mine.get(path), theirs.get(path)) if f is not None]
        return (min(positions), path.count("."), path)

    differing = sorted((p for p in mine.keys() | theirs.keys() if mine.get(p) != theirs.get(p)), key=key)
    if not differing:
        return None
    path = differing[0]
    while True:  # an aggregate in place, differing only by its content: name what in it differs
        a, b = mine.get(path), theirs.get(path)
        if a is None or b is None or a.bit_position != b.bit_position or a.type != b.type:
            return path
        inner = [p for p in differing if p.startswith(path + ".") or p.startswith(path + "[")]
        if not inner:
            return path
        path = inner[0]


def compare_layouts(mine: StructSpec, theirs: StructSpec) -> LayoutDifference | None:
    """The first difference between this image's layout (`mine`) and the other's, or None if they agree.

    The first member that differs in memory order (lowest bit position on either side, then the
    outer member, then the path) is named; a nested structure or array in place whose members
    differ is not named itself, its first differing member is. With every member equal, the size
    of the whole structure, then its alignment, is compared.
    """
    a, b = describe(mine), describe(theirs)
    name = a.name
    mine_fields = {f.path: f for f in a.fields}
    their_fields = {f.path: f for f in b.fields}
    path = _first_differing_path(mine_fields, their_fields)
    if path is None:
        if a.size != b.size:
            return LayoutDifference(
                name, "", f"{a.size} bytes", f"{b.size} bytes",
                f"struct {name} is {a.size} bytes in this image but {b.size} bytes in the region's, though every "
                f"field agrees: check its trailing padding and alignment attributes",
            )
        if a.align != b.align:
            return LayoutDifference(
                name, "", f"alignment {a.align}", f"alignment {b.align}",
                f"struct {name} has alignment {a.align} in this image but {b.align} in the region's, though its "
                f"size and fields agree: check __attribute__((aligned)) / _align_ on its definition",
            )
        return None
    fa, fb = mine_fields.get(path), their_fields.get(path)
    if fb is None:
        assert fa is not None
        return LayoutDifference(
            name, path, fa.summary(), "absent",
            f"field '{path}' ({fa.summary()}) is in this image's struct {name} but not in the region's struct "
            f"{b.name}: the images were built from different versions of its definition",
        )
    if fa is None:
        return LayoutDifference(
            name, path, "absent", fb.summary(),
            f"field '{path}' ({fb.summary()}) is in the region's struct {b.name} but not in this image's struct "
            f"{name}: the images were built from different versions of its definition",
        )
    expected, found = fa.summary(), fb.summary()
    kind = "bit field" if fa.bit_width or fb.bit_width else "field"
    if fa.bit_position != fb.bit_position:
        def where(f: FieldLayout) -> str:
            bits = f" bit {f.bit_offset} ({f.bit_width} bits)" if f.bit_width else f" (size {f.size})"
            return f"offset {f.offset}{bits}"

        message = (f"{kind} '{path}' is at {where(fa)} in this image but at {where(fb)} in the region's: check "
                   f"packing/alignment of struct {name} (and of the fields before '{path}')")
    elif fa.type != fb.type or fa.size != fb.size or fa.bit_width != fb.bit_width:
        def what(f: FieldLayout) -> str:
            return f"a {f.bit_width}-bit field of a {f.type}" if f.bit_width else f"{f.type} (size {f.size})"

        message = (f"{kind} '{path}' is {what(fa)} in this image but {what(fb)} in the region's, both at offset "
                   f"{fa.offset}: the two images declare it with different types in struct {name}")
    else:
        message = (f"{kind} '{path}' has alignment {fa.align} in this image but {fb.align} in the region's (same "
                   f"offset {fa.offset} and size {fa.size}): check packing of struct {name}")
    return LayoutDifference(name, path, expected, found, message)


# ---- ctypes types for Layouts ------------------------------------------------------------------

_CT = TypeVar("_CT", bound="ctypes.Structure | ctypes.Union")
_generated: dict[Layout, type[ctypes.Structure]] = {}


def _ctype_of_member(ftype: FieldType) -> type[Any]:
    if isinstance(ftype, str):
        return _SCALARS[ftype][1]
    if isinstance(ftype, Layout):
        return ctype_of(ftype)
    element, count = ftype
    array: type[Any] = _ctype_of_member(element) * count
    return array


def ctype_of(layout: Layout) -> type[ctypes.Structure]:
    """The ctypes structure type whose fields sit exactly where `layout` puts them.

    It is packed (``_pack_ = 1``) with explicit padding members (``_ampipc_pad<offset>``), so its
    offsets are the Layout's on any host; the same Layout always gives the same type.
    """
    cached = _generated.get(layout)
    if cached is not None:
        return cached
    members: list[tuple[str, type[Any]]] = []
    cursor = 0
    for (fname, ftype), offset in zip(layout.fields, layout.offsets):
        if offset > cursor:
            members.append((f"_ampipc_pad{cursor}", ctypes.c_uint8 * (offset - cursor)))
        member = _ctype_of_member(ftype)
        members.append((fname, member))
        cursor = offset + ctypes.sizeof(member)
    if layout.size > cursor:
        members.append((f"_ampipc_pad{cursor}", ctypes.c_uint8 * (layout.size - cursor)))
    class_name = layout.name if layout.name.isidentifier() else "Layout"
    generated = type(class_name, (ctypes.Structure,), {"_pack_": 1, "_fields_": members})
    assert ctypes.sizeof(generated) == layout.size, "a generated structure must have the Layout's size"
    _generated[layout] = generated
    return generated


def _instance_type(spec: Any) -> type[Any]:
    if isinstance(spec, Layout):
        return ctype_of(spec)
    if isinstance(spec, type) and issubclass(spec, _Aggregate):
        return spec
    raise TypeError(f"a shared structure is described by a Layout or a ctypes Structure/Union class, not {spec!r}")


# ---- in the region -----------------------------------------------------------------------------


@overload
def place_struct(region: Region, name: str, spec: type[_CT]) -> _CT: ...
@overload
def place_struct(region: Region, name: str, spec: Layout) -> Any: ...
def place_struct(region: Region, name: str, spec: Any) -> Any:
    """Create the shared structure `name` in `region`, zeroed, and return a ctypes instance over it.

    The region's object records the structure's canonical description and fingerprint, so that
    `attach_struct` in another image can check its own description against it. For a `Layout`
    the instance's type is `ctype_of(spec)`. Raises `ObjectExists` if the name is taken,
    `RegionFull`, and `ValueError` for a description that cannot be shared.
    """
    instance_type = _instance_type(spec)
    desc = describe(spec)
    blob = _encode(desc)
    if len(blob) > MAX_DESCRIPTION_BYTES:
        raise ValueError(f"the description of struct {desc.name} is {len(blob)} bytes, more than "
                         f"{MAX_DESCRIPTION_BYTES}: split the structure")
    storage_align = max(_MIN_STORAGE_ALIGN, desc.align)
    slack = storage_align - 1  # the storage is aligned in the region, after a description of any length
    offset = region.allocate(name, STRUCT_KIND, _HEADER_SIZE + len(blob) + slack + desc.size)
    storage = L.align_up(offset + _HEADER_SIZE + len(blob), storage_align) - offset
    digest = bytes.fromhex(fingerprint(desc))
    with region.view as view:
        view[offset + _HEADER_SIZE: offset + _HEADER_SIZE + len(blob)] = blob
        _HEADER.pack_into(view, offset, 0, _VERSION, digest, desc.size, desc.align, len(blob), storage)
    region.mapping.store_u32(offset, _MAGIC)  # last: publishes the complete header and description
    return instance_type.from_buffer(region.mapping, offset + storage)


def _read(region: Region, entry: ObjectEntry) -> tuple[StructDescription, str, int]:
    """The region's description, its fingerprint and the storage's offset in the region, all checked."""

    def corrupt(what: str, value: int | None, why: str) -> CorruptRegion:
        shown = "" if value is None else f" = {value}"
        return CorruptRegion(f"region {region.name!r}: shared structure {entry.name!r} is corrupt: {what}{shown} {why}",
                             object=entry.name, field=what, value=value)

    if entry.size < _HEADER_SIZE:
        raise corrupt("object size", entry.size, f"is smaller than its {_HEADER_SIZE}-byte header")
    deadline = time.monotonic() + _PUBLISH_WAIT
    while (magic := region.mapping.load_u32(entry.offset)) == 0 and time.monotonic() < deadline:
        time.sleep(0.002)  # allocated, not yet published by its placer
    if magic != _MAGIC:
        raise corrupt("magic", magic, f"is not {_MAGIC:#010x}" + (" (never published)" if magic == 0 else ""))
    with region.view as view:
        _, version, digest, size, align, desc_len, storage = _HEADER.unpack_from(view, entry.offset)
        if version != _VERSION:
            raise IncompatibleRegion(f"region {region.name!r}: shared structure {entry.name!r} has layout version "
                                     f"{version}; this ampipc reads version {_VERSION}")
        if not L.is_power_of_two(align) or align > MAX_ALIGNMENT:
            raise corrupt("alignment", align, f"is not a power of two up to {MAX_ALIGNMENT}")
        if size == 0 or size > entry.size:
            raise corrupt("size", size, f"is out of range for a {entry.size}-byte object")
        if not 2 <= desc_len <= MAX_DESCRIPTION_BYTES or _HEADER_SIZE + desc_len > entry.size:
            raise corrupt("description length", desc_len, f"is out of range for a {entry.size}-byte object")
        if storage < _HEADER_SIZE + desc_len or storage + size > entry.size:
            raise corrupt("storage offset", storage, f"is out of range (description ends at "
                          f"{_HEADER_SIZE + desc_len}, object is {entry.size} bytes, structure {size})")
        if (entry.offset + storage) % max(_MIN_STORAGE_ALIGN, align):
            raise corrupt("storage offset", storage, f"is not aligned to {max(_MIN_STORAGE_ALIGN, align)} in the region")
        blob = bytes(view[entry.offset + _HEADER_SIZE: entry.offset + _HEADER_SIZE + desc_len])
    try:
        desc = _decode(blob)
    except ValueError as e:
        raise corrupt("description", None, f"cannot be read: {e}") from None
    if desc.size != size:
        raise corrupt("size", size, f"disagrees with the description's {desc.size}")
    if desc.align != align:
        raise corrupt("alignment", align, f"disagrees with the description's {desc.align}")
    stored = digest.hex()
    if fingerprint(desc) != stored:
        raise corrupt("fingerprint", None, f"{stored} is not the fingerprint of the stored description")
    return desc, stored, entry.offset + storage


def read_struct_description(region: Region, name: str) -> StructDescription:
    """The description the region holds for the shared structure `name` (for tools); checked as at attach."""
    return _read(region, region.lookup(name, STRUCT_KIND))[0]


@overload
def attach_struct(region: Region, name: str, spec: type[_CT]) -> _CT: ...
@overload
def attach_struct(region: Region, name: str, spec: Layout) -> Any: ...
def attach_struct(region: Region, name: str, spec: Any) -> Any:
    """A ctypes instance over the shared structure `name`, if this image's description agrees with the region's.

    Raises `LayoutMismatch` naming the first differing field (see `compare_layouts`),
    `ObjectNotFound` if there is no shared structure of that name, `CorruptRegion` for a damaged
    object.
    """
    instance_type = _instance_type(spec)
    mine = describe(spec)
    theirs, stored_fingerprint, storage = _read(region, region.lookup(name, STRUCT_KIND))
    if fingerprint(mine) != stored_fingerprint:
        difference = compare_layouts(mine, theirs)
        assert difference is not None, "different fingerprints come from different descriptions"
        raise difference.error()
    return instance_type.from_buffer(region.mapping, storage)
