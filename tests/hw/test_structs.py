"""Structure agreement between two images: descriptions, fingerprints, attach checks, corrupt headers."""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ampipc
from ampipc import CorruptRegion, IncompatibleRegion, LayoutMismatch, ObjectExists, ObjectNotFound, Region
from ampipc.hw import structs as S
from ampipc.hw.structs import (
    FieldLayout,
    Layout,
    StructDescription,
    attach_struct,
    compare_layouts,
    ctype_of,
    describe,
    fingerprint,
    place_struct,
    read_struct_description,
)

from ._structs_support import MSG_LAYOUT, VARIANTS, Msg, Packet, check_variants_worker, layout_image_worker
from ._support import GENEROUS

CTYPES_OF = {
    "u8": ctypes.c_uint8, "i8": ctypes.c_int8, "u16": ctypes.c_uint16, "i16": ctypes.c_int16,
    "u32": ctypes.c_uint32, "i32": ctypes.c_int32, "u64": ctypes.c_uint64, "i64": ctypes.c_int64,
    "f32": ctypes.c_float, "f64": ctypes.c_double, "bool": ctypes.c_bool, "char": ctypes.c_char,
}


def _ctypes_equivalent(layout: Layout) -> type[ctypes.Structure]:
    """The naturally declared ctypes structure a host programmer would write for `layout`."""

    def member(ftype: Any) -> Any:
        if isinstance(ftype, str):
            return CTYPES_OF[ftype]
        if isinstance(ftype, Layout):
            return _ctypes_equivalent(ftype)
        return member(ftype[0]) * ftype[1]

    namespace: dict[str, Any] = {"_fields_": [(n, member(t)) for n, t in layout.fields]}
    if layout.pack:
        namespace["_pack_"] = layout.pack
    return type(layout.name, (ctypes.Structure,), namespace)


# ---- descriptions ------------------------------------------------------------------------------


def test_layout_computes_aapcs_offsets() -> None:
    layout = Layout("msg_header", [("kind", "u8"), ("len", "uint16_t"), ("stamp", "u64"), ("tail", ("u8", 3))])
    assert layout.offsets == (0, 2, 8, 16)
    assert (layout.size, layout.alignment) == (24, 8)
    packed = Layout("msg_header", layout.fields, pack=1)
    assert packed.offsets == (0, 1, 3, 11) and (packed.size, packed.alignment) == (14, 1)
    two = Layout("msg_header", layout.fields, pack=2)
    assert two.offsets == (0, 2, 4, 12) and (two.size, two.alignment) == (16, 2)
    aligned = Layout("msg_header", [("a", "u32")], align=32)
    assert (aligned.size, aligned.alignment) == (32, 32)
    assert describe(layout) == describe(_ctypes_equivalent(layout))
    assert describe(packed) == describe(_ctypes_equivalent(packed))


def test_nested_structures_arrays_and_paths() -> None:
    desc = describe(Packet)
    assert [f.path for f in desc.fields] == [
        "hdr", "hdr.kind", "hdr.len", "hdr.seq", "hdr.stamp", "hdr.payload", "body"]
    assert desc.member("hdr") == FieldLayout("hdr", 0, 32, 8, "struct")
    assert desc.member("hdr.stamp") == FieldLayout("hdr.stamp", 16, 8, 8, "u64")
    assert desc.member("body") == FieldLayout("body", 32, 16, 4, "u32[4]")
    assert (desc.size, desc.align, desc.name) == (48, 8, "Packet")

    class Table(ctypes.Structure):
        _fields_ = [("count", ctypes.c_uint16), ("rows", Msg * 3), ("grid", (ctypes.c_int16 * 4) * 2)]

    table = describe(Table)
    assert table.member("rows") == FieldLayout("rows", 8, 96, 8, "struct[3]")
    assert table.member("rows[0].len") == FieldLayout("rows[0].len", 12, 4, 4, "u32")
    assert table.member("grid") == FieldLayout("grid", 104, 16, 2, "i16[2][4]")
    equivalent = Layout("Table", [("count", "u16"), ("rows", (MSG_LAYOUT, 3)), ("grid", (("i16", 4), 2))])
    assert describe(equivalent) == table
    assert fingerprint(equivalent) == fingerprint(Table)


def test_bit_fields_unions_and_inheritance() -> None:
    class Flags(ctypes.Structure):
        _fields_ = [("ready", ctypes.c_uint32, 1), ("mode", ctypes.c_uint32, 3), ("count", ctypes.c_uint32, 12)]

    flags = describe(Flags)
    assert [(f.path, f.offset, f.bit_offset, f.bit_width, f.size) for f in flags.fields] == [
        ("ready", 0, 0, 1, 4), ("mode", 0, 1, 3, 4), ("count", 0, 4, 12, 4)]

    class Wider(ctypes.Structure):
        _fields_ = [("ready", ctypes.c_uint32, 1), ("mode", ctypes.c_uint32, 4), ("count", ctypes.c_uint32, 12)]

    difference = compare_layouts(Flags, Wider)
    assert difference is not None and difference.field == "mode"
    assert "3-bit" in difference.message and "4-bit" in difference.message

    class Value(ctypes.Union):
        _fields_ = [("word", ctypes.c_uint32), ("half", ctypes.c_uint16 * 2), ("real", ctypes.c_float)]

    union = describe(Value)
    assert {f.offset for f in union.fields} == {0} and (union.size, union.align) == (4, 4)

    class Reordered(ctypes.Union):  # the same union, members declared in another order: the same layout
        _fields_ = [("real", ctypes.c_float), ("word", ctypes.c_uint32), ("half", ctypes.c_uint16 * 2)]

    assert describe(Reordered) == union and fingerprint(Reordered) == fingerprint(Value)

    class Base(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint32)]

    class Derived(Base):
        _fields_ = [("b", ctypes.c_uint16)]

    assert [(f.path, f.offset) for f in describe(Derived).fields] == [("a", 0), ("b", 4)]


def test_host_dependent_and_unusable_descriptions_are_refused() -> None:
    class WithPointer(ctypes.Structure):
        _fields_ = [("next", ctypes.POINTER(ctypes.c_uint32))]

    class WithWchar(ctypes.Structure):
        _fields_ = [("c", ctypes.c_wchar)]

    class BigEndian(ctypes.BigEndianStructure):
        _fields_ = [("a", ctypes.c_uint32)]

    class Empty(ctypes.Structure):
        pass

    for bad, words in ((WithPointer, "pointer"), (WithWchar, "fixed"), (BigEndian, "big-endian"), (Empty, "no fields")):
        with pytest.raises(ValueError, match=words):
            describe(bad)
    with pytest.raises(TypeError):
        describe(42)  # type: ignore[arg-type]
    for fields, words in (([], "no fields"), ([("a", "u128")], "unknown type"), ([("a", "u8"), ("a", "u8")], "twice"),
                          ([("1a", "u8")], "identifier"), ([("a", ("u8", 0))], "positive")):
        with pytest.raises(ValueError, match=words):
            Layout("bad", fields)
    with pytest.raises(ValueError, match="pack"):
        Layout("bad", [("a", "u8")], pack=3)
    with pytest.raises(ValueError, match="align"):
        Layout("bad", [("a", "u8")], align=6)
    # c_long is 8 bytes on this 64-bit host, 4 on the Cortex-M: it is described as what it is here
    class WithLong(ctypes.Structure):
        _fields_ = [("n", ctypes.c_long)]

    assert describe(WithLong).member("n").type == f"i{8 * ctypes.sizeof(ctypes.c_long)}"


def test_fingerprint_ignores_names_of_types_but_not_of_fields() -> None:
    assert fingerprint(Msg) == fingerprint(MSG_LAYOUT) == fingerprint(describe(Msg))
    assert len(fingerprint(Msg)) == 32 and int(fingerprint(Msg), 16) >= 0
    renamed = Layout("other_name", MSG_LAYOUT.fields)
    assert fingerprint(renamed) == fingerprint(MSG_LAYOUT)
    field_renamed = Layout("msg", [("kind2" if n == "kind" else n, t) for n, t in MSG_LAYOUT.fields])
    assert fingerprint(field_renamed) != fingerprint(MSG_LAYOUT)


def test_generated_ctypes_type_has_the_layouts_offsets() -> None:
    inner = Layout("inner", [("a", "u8"), ("b", "u32")], align=16)
    outer = Layout("outer", [("x", "u8"), ("inner", inner), ("tail", ("u16", 3))])
    generated = ctype_of(outer)
    assert ctype_of(outer) is generated
    assert ctypes.sizeof(generated) == outer.size == 48
    assert generated.inner.offset == 16 and generated.tail.offset == 32  # type: ignore[attr-defined]
    assert ctypes.sizeof(ctype_of(inner)) == 16


# ---- in the region ------------------------------------------------------------------------------


def test_identical_definitions_attach_and_share_the_bytes(region: Region) -> None:
    placed = place_struct(region, "msg", Msg)
    assert isinstance(placed, Msg)
    placed.len, placed.stamp, placed.payload[7] = 1234, 1 << 40, 9
    attached = attach_struct(region, "msg", MSG_LAYOUT)  # the other image describes it as a Layout
    assert (attached.len, attached.stamp, attached.payload[7]) == (1234, 1 << 40, 9)
    attached.seq = 77
    assert placed.seq == 77
    entry = region.lookup("msg", S.STRUCT_KIND)
    assert entry.offset < ctypes.addressof(placed) - ctypes.addressof(ctypes.c_char.from_buffer(region.mapping)) < (
        entry.offset + entry.size)
    desc = read_struct_description(region, "msg")
    assert desc == describe(Msg) and desc.name == "Msg"
    with pytest.raises(ObjectExists):
        place_struct(region, "msg", Msg)
    del placed, attached


@pytest.mark.parametrize("align", [8, 16, 64, 256])
def test_storage_is_aligned_to_the_structure(region: Region, align: int) -> None:
    base = ctypes.addressof(ctypes.c_char.from_buffer(region.mapping))
    region.allocate("filler", "test", 8)  # the next object starts on a mere 64-byte boundary
    layout = Layout("aligned", [("a", "u8")], align=align)
    instance = place_struct(region, "aligned", layout)
    assert (ctypes.addressof(instance) - base) % align == 0
    assert ctypes.addressof(attach_struct(region, "aligned", layout)) == ctypes.addressof(instance)


def test_missing_or_wrong_kind_is_object_not_found(region: Region) -> None:
    with pytest.raises(ObjectNotFound):
        attach_struct(region, "nothing", Msg)
    region.allocate("words", "test", 64)
    with pytest.raises(ObjectNotFound):
        attach_struct(region, "words", Msg)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_mismatch_is_refused_naming_the_field(region: Region, variant: str) -> None:
    place_struct(region, "msg", Msg)
    place_struct(region, "packet", Packet)
    object_name, spec, expected_field = VARIANTS[variant]
    with pytest.raises(LayoutMismatch) as caught:
        attach_struct(region, object_name, spec)  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, ampipc.IpcError)
    assert error.field == expected_field
    assert error.structure in {"msg", "packet"}
    assert error.expected != error.found
    if expected_field:
        assert f"'{expected_field}'" in str(error)
    else:
        assert "every field agrees" in str(error) or "size and fields agree" in str(error)


def test_mismatch_messages_speak_firmware() -> None:
    natural = Layout("msg_header", [("kind", "u8"), ("len", "u16")])
    packed = Layout("msg_header", natural.fields, pack=1)
    difference = compare_layouts(natural, packed)
    assert difference is not None
    assert difference.message == (
        "field 'len' is at offset 2 (size 2) in this image but at offset 1 (size 2) in the region's: check "
        "packing/alignment of struct msg_header (and of the fields before 'len')")
    assert difference.expected == "u16 at offset 2 (size 2, alignment 2)"
    assert difference.found == "u16 at offset 1 (size 2, alignment 1)"
    wider = Layout("msg_header", [("kind", "u8"), ("len", "u32")])
    moved = compare_layouts(wider, natural)
    assert moved is not None and moved.field == "len" and "offset 4 (size 4)" in moved.message
    typed = compare_layouts(Layout("m", [("len", "u32")]), Layout("m", [("len", "i32")]))
    assert typed is not None and "u32 (size 4) in this image but i32 (size 4)" in typed.message
    missing = compare_layouts(Layout("m", [("a", "u32")]), Layout("n", [("a", "u32"), ("b", "u32")]))
    assert missing is not None and (missing.field, missing.expected) == ("b", "absent")
    assert "in the region's struct n but not in this image's struct m" in missing.message
    assert compare_layouts(natural, Layout("renamed", natural.fields)) is None


def test_a_nested_structure_that_moved_is_named_itself() -> None:
    inner = Layout("inner", [("a", "u32")])
    before = Layout("outer", [("x", "u8"), ("inner", inner)])
    after = Layout("outer", [("x", "u16"), ("y", "u16"), ("inner", inner)])
    difference = compare_layouts(before, after)
    assert difference is not None and difference.field == "x"
    shifted = Layout("outer", [("x", "u8"), ("inner", inner)], pack=1)
    difference = compare_layouts(before, shifted)
    assert difference is not None and difference.field == "inner"  # moved as a whole: not "inner.a"
    grown = Layout("outer", [("x", "u8"), ("inner", Layout("inner", [("a", "u32")], align=8))])
    difference = compare_layouts(before, grown)
    assert difference is not None and difference.field == "inner"  # in place, bigger, same members


def test_identical_definitions_in_another_process(
    unique_name: Callable[..., str], spawn: Any
) -> None:
    name = unique_name("s")
    region = Region.create(name, 1 << 16)
    try:
        msg = place_struct(region, "msg", Msg)
        packet = place_struct(region, "packet", Packet)
        msg.kind, msg.len, msg.seq, msg.stamp = 3, 100, 7, 12345678901
        msg.payload[:] = list(range(8))
        packet.hdr.len, packet.body[0] = 42, 0x11223344
        seen = spawn.ctx.Queue()
        child = spawn(layout_image_worker, name, seen)
        assert seen.get(timeout=GENEROUS) == (3, 100, 7, 12345678901, list(range(8)), 42, [0x11223344, 0, 0, 0])
        assert spawn.join(child) == 0
        assert (msg.len, msg.stamp, msg.payload[7]) == (101, 1 << 63, 0xEE)
        assert (packet.hdr.seq, packet.body[3]) == (0xBEEF, 0xDEADBEEF)
        del msg, packet
    finally:
        region.close()


def test_every_mismatch_is_refused_in_another_process(
    unique_name: Callable[..., str], spawn: Any
) -> None:
    name = unique_name("s")
    region = Region.create(name, 1 << 16)
    try:
        place_struct(region, "msg", Msg).len = 5
        place_struct(region, "packet", Packet)
        results = spawn.ctx.Queue()
        child = spawn(check_variants_worker, name, results)
        reports = {}
        for _ in range(len(VARIANTS) + 1):
            variant, outcome, field, expected, found, message = results.get(timeout=GENEROUS)
            reports[variant] = (outcome, field, expected, found, message)
        assert spawn.join(child) == 0
        assert reports["identical"] == ("ok", "", "", "", "5")  # the agreeing image read the parent's len
        for variant, (_, _, expected_field) in VARIANTS.items():
            outcome, field, expected, found, message = reports[variant]
            assert (outcome, field) == ("LayoutMismatch", expected_field), (variant, message)
            # the child's (this image's) side is "expected"; the region's, written by the parent, "found"
            if expected_field:
                theirs = describe(Packet if variant == "nested field" else Msg).fields
                placed = {f.path: f for f in theirs}
                assert found == (placed[expected_field].summary() if expected_field in placed else "absent")
    finally:
        region.close()


# ---- corrupt headers ----------------------------------------------------------------------------

HEADER = struct.Struct("<II16sIIII")


def _rewrite(region: Region, name: str, **changes: Any) -> None:
    entry = region.lookup(name)
    with region.view as view:
        values = dict(zip(("magic", "version", "fingerprint", "size", "align", "desc_len", "storage"),
                          HEADER.unpack_from(view, entry.offset)))
        values.update(changes)
        HEADER.pack_into(view, entry.offset, *values.values())


def _header(region: Region, name: str) -> dict[str, Any]:
    entry = region.lookup(name)
    with region.view as view:
        return dict(zip(("magic", "version", "fingerprint", "size", "align", "desc_len", "storage"),
                        HEADER.unpack_from(view, entry.offset)))


@pytest.mark.parametrize("field, change", [
    ("magic", lambda h: {"magic": 0xDEADBEEF}),
    ("alignment", lambda h: {"align": 12}),
    ("alignment", lambda h: {"align": 1 << 20}),
    ("size", lambda h: {"size": 0}),
    ("size", lambda h: {"size": 1 << 30}),
    ("size", lambda h: {"size": h["size"] - 8}),  # in range, but not the description's
    ("alignment", lambda h: {"align": 4}),  # a power of two, but not the description's
    ("description length", lambda h: {"desc_len": 1 << 30}),
    ("description length", lambda h: {"desc_len": 0}),
    ("description", lambda h: {"desc_len": h["desc_len"] - 1}),  # truncated JSON
    ("storage offset", lambda h: {"storage": 8}),
    ("storage offset", lambda h: {"storage": 1 << 30}),
    ("storage offset", lambda h: {"storage": h["storage"] + 4}),  # misaligned
    ("fingerprint", lambda h: {"fingerprint": bytes(16)}),
])
def test_corrupt_header_values_are_refused(region: Region, field: str, change: Callable[[dict[str, Any]], dict[str, Any]]
                                           ) -> None:
    place_struct(region, "msg", Msg)
    _rewrite(region, "msg", **change(_header(region, "msg")))
    for read in (lambda: attach_struct(region, "msg", Msg), lambda: read_struct_description(region, "msg")):
        with pytest.raises(CorruptRegion) as caught:
            read()
        assert (caught.value.object, caught.value.field) == ("msg", field)


@pytest.mark.parametrize("damage, words", [
    (lambda d: d.replace(b'"size":32', b'"size":33'), "fingerprint"),  # consistent JSON, stale fingerprint
    (lambda d: d.replace(b'"name":"', b'"name":7,,"'), "not JSON"),
    (lambda d: d.replace(b'"u64"', b'"u65"'), "fingerprint"),
    (lambda d: d.replace(b'["len",4', b'["len",30'), "outside"),
    (lambda d: d.replace(b'[["kind",0', b'[["kind",-1'), "out of range"),
    (lambda d: d.replace(b'"fields"', b'"fieldz"'), "exactly"),
    (lambda d: d.replace(b'"kind"', b'"len"'), "repeated"),
    (lambda d: d.replace(b'"kind",0,1,1,"u8",0,0', b'"kind",0,1,1,"u8",true,0'), "out of range"),
])
def test_corrupt_descriptions_are_refused(region: Region, damage: Callable[[bytes], bytes], words: str) -> None:
    roomy = Layout("x" * 24, MSG_LAYOUT.fields)  # a long name, shortened to make room for longer damage
    place_struct(region, "msg", roomy)
    entry = region.lookup("msg")
    header = _header(region, "msg")
    start = entry.offset + 64
    with region.view as view:
        original = bytes(view[start: start + header["desc_len"]])
        damaged = damage(original)
        assert damaged != original
        growth = len(damaged) - len(original)
        if growth > 0:
            damaged = damaged.replace(b"x" * 24, b"x" * (24 - growth))
        view[start: start + len(damaged)] = damaged
    _rewrite(region, "msg", desc_len=len(damaged), size=33 if b'"size":33' in damaged else header["size"])
    with pytest.raises(CorruptRegion, match=words) as caught:
        attach_struct(region, "msg", MSG_LAYOUT)
    assert caught.value.field in {"description", "fingerprint"}


def test_small_object_and_other_version(region: Region) -> None:
    region.allocate("tiny", S.STRUCT_KIND, 16)
    with pytest.raises(CorruptRegion) as caught:
        read_struct_description(region, "tiny")
    assert caught.value.field == "object size"
    place_struct(region, "msg", Msg)
    _rewrite(region, "msg", version=2)
    with pytest.raises(IncompatibleRegion, match="version 2"):
        attach_struct(region, "msg", Msg)


def test_an_unpublished_structure_is_waited_for_then_refused(region: Region, monkeypatch: pytest.MonkeyPatch) -> None:
    placed = place_struct(region, "msg", Msg)
    entry = region.lookup("msg")
    region.mapping.store_u32(entry.offset, 0)  # as between the placer's allocate and its magic store
    monkeypatch.setattr(S, "_PUBLISH_WAIT", 0.05)
    with pytest.raises(CorruptRegion, match="never published") as caught:
        attach_struct(region, "msg", Msg)
    assert caught.value.field == "magic"
    monkeypatch.setattr(S, "_PUBLISH_WAIT", GENEROUS)
    publish = threading.Timer(0.05, lambda: region.mapping.store_u32(entry.offset, S._MAGIC))
    publish.start()
    try:
        assert ctypes.addressof(attach_struct(region, "msg", Msg)) == ctypes.addressof(placed)
    finally:
        publish.join()
    del placed


# ---- properties -----------------------------------------------------------------------------------

SCALAR_CODES = list(CTYPES_OF)
_member = st.tuples(st.sampled_from(SCALAR_CODES), st.one_of(st.none(), st.integers(1, 5)))
_pack = st.sampled_from([None, 1, 2, 4, 8])


def _layout_of(name: str, members: list[tuple[str, str, int | None]], pack: int | None = None,
               align: int | None = None) -> Layout:
    return Layout(name, [(n, code if count is None else (code, count)) for n, code, count in members],
                  pack=pack, align=align)


@st.composite
def flat_members(draw: st.DrawFn, min_size: int = 1) -> list[tuple[str, str, int | None]]:
    raw = draw(st.lists(_member, min_size=min_size, max_size=8))
    return [(f"f{i}", code, count) for i, (code, count) in enumerate(raw)]


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    """Random structures of scalars and arrays, sometimes with one nested structure (or array of them)."""
    members: list[tuple[str, Any]] = [
        (n, code if count is None else (code, count)) for n, code, count in draw(flat_members())]
    if draw(st.booleans()):
        inner = _layout_of("inner", draw(flat_members()), pack=draw(_pack))
        count = draw(st.one_of(st.none(), st.integers(1, 3)))
        members.insert(draw(st.integers(0, len(members))), ("nest", inner if count is None else (inner, count)))
    return Layout("random", members, pack=draw(_pack))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_layout_offsets_equal_ctypes_offsets(layout: Layout) -> None:
    equivalent = _ctypes_equivalent(layout)
    assert describe(layout) == describe(equivalent)
    assert (layout.size, layout.alignment) == (ctypes.sizeof(equivalent), ctypes.alignment(equivalent))
    for (name, _), offset in zip(layout.fields, layout.offsets):
        assert getattr(equivalent, name).offset == offset
    generated = ctype_of(layout)
    for (name, _), offset in zip(layout.fields, layout.offsets):
        assert getattr(generated, name).offset == offset


def _reference_first_difference(a: StructDescription, b: StructDescription) -> str | None:
    """Scan the structure address by address: the first bit position where the members starting there
    differ between the two sides names the (alphabetically first) differing member there."""
    def at(desc: StructDescription, position: int) -> set[tuple[Any, ...]]:
        return {(f.path, f.offset, f.size, f.align, f.type, f.bit_offset, f.bit_width)
                for f in desc.fields if f.offset * 8 + f.bit_offset == position}

    positions = sorted({f.offset * 8 + f.bit_offset for f in a.fields + b.fields})
    for position in positions:
        here_a, here_b = at(a, position), at(b, position)
        if here_a != here_b:
            return min(t[0] for t in here_a ^ here_b)
    if a.size != b.size or a.align != b.align:
        return ""
    return None


@st.composite
def layout_pairs(draw: st.DrawFn) -> tuple[Layout, Layout]:
    """A flat structure and a variant of it: identical, or with one of the classic differences."""
    members = draw(flat_members())
    pack, align = draw(_pack), None
    theirs = list(members)
    their_pack, their_align = pack, align
    mutation = draw(st.sampled_from(["same", "type", "count", "drop", "insert", "rename", "pack", "swap", "align",
                                     "independent"]))
    i = draw(st.integers(0, len(members) - 1))
    if mutation == "type":
        theirs[i] = (theirs[i][0], draw(st.sampled_from(SCALAR_CODES)), theirs[i][2])
    elif mutation == "count":
        theirs[i] = (theirs[i][0], theirs[i][1], draw(st.one_of(st.none(), st.integers(1, 5))))
    elif mutation == "drop" and len(theirs) > 1:
        del theirs[i]
    elif mutation == "insert":
        code, count = draw(_member)
        theirs.insert(i, ("extra", code, count))
    elif mutation == "rename":
        theirs[i] = ("renamed", theirs[i][1], theirs[i][2])
    elif mutation == "pack":
        their_pack = draw(_pack)
    elif mutation == "swap" and len(theirs) > 1:
        j = (i + 1) % len(theirs)
        theirs[i], theirs[j] = (theirs[i][0], *theirs[j][1:]), (theirs[j][0], *theirs[i][1:])
    elif mutation == "align":
        their_align = draw(st.sampled_from([1, 4, 8, 16, 32]))
    elif mutation == "independent":
        theirs, their_pack = draw(flat_members()), draw(_pack)
    return _layout_of("mine", members, pack, align), _layout_of("theirs", theirs, their_pack, their_align)


@settings(max_examples=400, deadline=None)
@given(layout_pairs())
def test_fingerprints_and_first_differences_follow_the_reference(pair: tuple[Layout, Layout]) -> None:
    mine, theirs = pair
    a, b = describe(mine), describe(theirs)
    assert (fingerprint(mine) == fingerprint(theirs)) == (a == b)
    difference = compare_layouts(mine, theirs)
    reference = _reference_first_difference(a, b)
    if reference is None:
        assert difference is None and a == b
    else:
        assert difference is not None and difference.field == reference
        if reference:
            assert f"'{reference}'" in difference.message
        else:
            assert difference.expected != difference.found


@settings(max_examples=100, deadline=None)
@given(layouts())
def test_stored_descriptions_round_trip(layout: Layout) -> None:
    desc = describe(layout)
    assert S._decode(S._encode(desc)) == desc
    assert S._decode(S._encode(desc)).name == desc.name

