"""The two "images" of the structure-agreement tests, and the child-process targets.

The CM7 image's definitions (`Msg`, `Packet`) are ctypes structures; the CM4 image is a child
process that describes the same structures its own way (a `Layout`, or a ctypes structure built
with one of the classic mistakes: `VARIANTS`). Child targets live at module level so the spawn
start method can import them; each one exits non-zero (traceback on stderr) when a check fails.
"""

from __future__ import annotations

import ctypes
from typing import Any

from ampipc import LayoutMismatch, Region
from ampipc.hw.structs import Layout, StructSpec, attach_struct

__all__ = [
    "MSG_LAYOUT",
    "Msg",
    "Packet",
    "VARIANTS",
    "check_variants_worker",
    "layout_image_worker",
]


class Msg(ctypes.Structure):
    """struct msg { uint8_t kind; uint32_t len; uint16_t seq; uint64_t stamp; uint8_t payload[8]; } (32 bytes)."""

    _fields_ = [
        ("kind", ctypes.c_uint8),  # 0
        ("len", ctypes.c_uint32),  # 4
        ("seq", ctypes.c_uint16),  # 8
        ("stamp", ctypes.c_uint64),  # 16
        ("payload", ctypes.c_uint8 * 8),  # 24
    ]


class Packet(ctypes.Structure):
    """struct packet { struct msg hdr; uint32_t body[4]; }."""

    _fields_ = [("hdr", Msg), ("body", ctypes.c_uint32 * 4)]


MSG_LAYOUT = Layout("msg", [("kind", "u8"), ("len", "u32"), ("seq", "u16"), ("stamp", "u64"), ("payload", ("u8", 8))])


def _msg_variant(name: str, fields: list[tuple[Any, ...]], pack: int = 0) -> type[ctypes.Structure]:
    namespace: dict[str, Any] = {"_fields_": fields}
    if pack:
        namespace["_pack_"] = pack
    return type(name, (ctypes.Structure,), namespace)


_MSG_FIELDS: list[tuple[Any, ...]] = list(Msg._fields_)
_PackedMsg = _msg_variant("msg", _MSG_FIELDS, pack=1)  # __attribute__((packed)) on one side only

# variant -> (the object it is checked against, this image's description, the field that must be named)
VARIANTS: dict[str, tuple[str, StructSpec, str]] = {
    "field offset (_pack_)": ("msg", _PackedMsg, "len"),
    "field type (signed)": ("msg", _msg_variant("msg", [(n, ctypes.c_int32 if n == "len" else t) for n, t in _MSG_FIELDS]),
                            "len"),
    "field size": ("msg", _msg_variant("msg", [(n, ctypes.c_uint32 if n == "seq" else t) for n, t in _MSG_FIELDS]),
                   "seq"),
    "extra field": ("msg", _msg_variant("msg", _MSG_FIELDS[:3] + [("crc", ctypes.c_uint16)] + _MSG_FIELDS[3:]), "crc"),
    "missing field": ("msg", _msg_variant("msg", _MSG_FIELDS[:4]), "payload"),
    "total size": ("msg", Layout("msg", MSG_LAYOUT.fields, align=64), ""),
    "alignment": ("msg", Layout("msg", MSG_LAYOUT.fields, align=16), ""),
    "nested field": ("packet", _msg_variant("packet", [("hdr", _PackedMsg), ("body", ctypes.c_uint32 * 4)]),
                     "hdr.len"),
}


def check_variants_worker(region_name: str, results: Any) -> None:
    """Attach each variant; report (variant, error type, field, expected, found, message) per variant."""
    region = Region.attach(region_name)
    try:
        same = attach_struct(region, "msg", MSG_LAYOUT)  # the agreeing image attaches
        results.put(("identical", "ok", "", "", "", str(same.len)))
        for variant, (object_name, spec, _) in VARIANTS.items():
            try:
                attach_struct(region, object_name, spec)  # type: ignore[arg-type]
            except LayoutMismatch as e:
                results.put((variant, type(e).__name__, e.field, e.expected, e.found, str(e)))
            else:
                results.put((variant, "attached", "", "", "", ""))
    finally:
        region.close()


def layout_image_worker(region_name: str, seen: Any) -> None:
    """The CM4 image (a Layout): read what the CM7 wrote into ``msg`` and ``packet``, answer in place."""
    region = Region.attach(region_name)
    try:
        msg = attach_struct(region, "msg", MSG_LAYOUT)
        packet = attach_struct(region, "packet", Layout("packet", [("hdr", MSG_LAYOUT), ("body", ("u32", 4))]))
        seen.put((msg.kind, msg.len, msg.seq, msg.stamp, list(msg.payload), packet.hdr.len, list(packet.body)))
        msg.len = msg.len + 1
        msg.stamp = 1 << 63
        msg.payload[7] = 0xEE
        packet.hdr.seq = 0xBEEF
        packet.body[3] = 0xDEADBEEF
        del msg, packet  # the instances hold the mapping: drop them before the region closes
    finally:
        region.close()
