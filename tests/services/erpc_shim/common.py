# Generated-style common types (erpcgen: common.py)
from __future__ import annotations


class Reading(object):
    def __init__(self, channel=None, value=None, raw=None):  # type: ignore[no-untyped-def]
        self.channel = channel  # int32
        self.value = value  # float
        self.raw = raw  # binary

    def _read(self, codec):  # type: ignore[no-untyped-def]
        self.channel = codec.read_int32()
        self.value = codec.read_float()
        self.raw = codec.read_binary()
        return self

    def _write(self, codec):  # type: ignore[no-untyped-def]
        codec.write_int32(self.channel)
        codec.write_float(self.value)
        codec.write_binary(self.raw)
