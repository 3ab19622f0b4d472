"""The bridge's byte layouts, defined once: the sample attachment and the shared statistics object.

Sample attachment (``SAMPLE_HEADER``, 24 bytes, little-endian), carried in Zenoh's attachment of
every bridged sample so the payload is the message itself, byte for byte:

====== ===== ==================================================================================
offset width field
====== ===== ==================================================================================
0      u64   epoch: random, chosen by each export route when it starts (a restarted bridge
             has another epoch, so its sequence numbers are not mistaken for a gap)
8      u64   sequence: 1 for the first message of an epoch, +1 per message
16     u64   published_ns: ``time.time_ns()`` when the exporter published (wall clock: the lag
             is exact on one host, and as good as the hosts' clock sync across hosts)
====== ===== ==================================================================================

Packed sample (only between ampipc bridges, when the exporter was given ``pack`` > 1): the
payload is several whole messages, each as a u32 little-endian length then its bytes (the
message buffer's own framing), and the attachment is ``PACKED_HEADER`` (32 bytes): epoch u64,
sequence of the first message u64, published_ns u64, message count u32, reserved u32 (0). A
sample with one message is always sent unpacked, so a bridge that packs still talks to any Zenoh
subscriber whenever its source is not backlogged.

Statistics object (a region directory entry of kind ``zenoh_bridge``): a 128-byte header, then
``route_capacity`` route records of 192 bytes. Only the bridge process writes it (the header at
start and close, each route's record from that route's thread, every field with an aligned
atomic store); any process may read it (``ampipc top``), checking every value.

Header: magic u32 @0, version u32 @4, owner pid u32 @8, route capacity u32 @12, route count u32
@16 (stored after the route's record is complete), state u32 @20 (1 running, 2 closed), owner
start time u64 @24, zenoh id 32 bytes @32, bridge name 32 bytes @64, reserved to 128.

Route record: direction u32 @0 (1 export, 2 import), state u32 @4 (`ROUTE_STATES`), messages u64
@8, bytes u64 @16, drops u64 @24, lost u64 @32, last lag ns u64 @40, max lag ns u64 @48, backlog
u64 @56, peers u32 @64, peer losses u32 @68, epoch u64 @72 and last sequence u64 @80 (export
routes: stored before each publication, so a bridge restarted under the same name continues the
epoch and the importer counts what the dead one took but never delivered), local name 40 bytes
@88, key 64 bytes @128 (both NUL-padded UTF-8, cut with "..." when longer).
"""

from __future__ import annotations

import struct

__all__ = [
    "SAMPLE_HEADER",
    "PACKED_HEADER",
    "PACKED_LENGTH",
    "split_packed",
    "STATS_KIND",
    "STATS_MAGIC",
    "STATS_VERSION",
    "HEADER",
    "HEADER_SIZE",
    "ROUTE_HEAD",
    "ROUTE_SIZE",
    "DIRECTIONS",
    "ROUTE_STATES",
]

SAMPLE_HEADER = struct.Struct("<QQQ")
PACKED_HEADER = struct.Struct("<QQQII")
PACKED_LENGTH = struct.Struct("<I")

STATS_KIND = "zenoh_bridge"
STATS_MAGIC = 0x4752425A  # "ZBRG"
STATS_VERSION = 1

HEADER = struct.Struct("<IIIIIIQ32s32s")
HEADER_SIZE = 128
OFF_PID = 8
OFF_ROUTE_CAPACITY = 12
OFF_ROUTE_COUNT = 16
OFF_STATE = 20
OFF_START = 24
OFF_ZID = 32
OFF_NAME = 64
ZID_BYTES = 32
NAME_BYTES = 32

ROUTE_HEAD = struct.Struct("<IIQQQQQQQIIQQ40s64s")
ROUTE_SIZE = 192
R_DIRECTION = 0
R_STATE = 4
R_MESSAGES = 8
R_BYTES = 16
R_DROPS = 24
R_LOST = 32
R_LAG_LAST = 40
R_LAG_MAX = 48
R_BACKLOG = 56
R_PEERS = 64
R_PEER_LOSSES = 68
R_EPOCH = 72
R_SEQUENCE = 80
R_LOCAL = 88
R_KEY = 128
LOCAL_BYTES = 40
KEY_BYTES = 64

BRIDGE_RUNNING = 1
BRIDGE_CLOSED = 2

DIRECTIONS = {1: "export", 2: "import"}
ROUTE_STATES = {
    0: "waiting",  # no peer seen yet
    1: "connected",  # at least one peer route alive
    2: "peer lost",  # had peers, none left
    3: "source ended",  # export: the local writer closed or died; import: the remote exporter ended
    4: "sink failed",  # import: the local reader died or the sink refused a message for good
    5: "stopped",  # the bridge closed this route
}
STATE_CODES = {name: code for code, name in ROUTE_STATES.items()}

assert HEADER.size <= HEADER_SIZE and ROUTE_HEAD.size == ROUTE_SIZE


def split_packed(payload: bytes, count: int) -> list[bytes]:
    """The `count` messages of a packed payload; ValueError unless it is exactly `count` whole messages."""
    out: list[bytes] = []
    view = memoryview(payload)
    offset, end = 0, len(payload)
    for _ in range(count):
        if offset + 4 > end:
            raise ValueError(f"packed sample: message {len(out)} has no length ({end - offset} bytes left)")
        (length,) = PACKED_LENGTH.unpack_from(view, offset)
        offset += 4
        if length > end - offset:
            raise ValueError(f"packed sample: message {len(out)} claims {length} bytes, {end - offset} are left")
        out.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != end:
        raise ValueError(f"packed sample: {end - offset} bytes after its {count} messages")
    return out
