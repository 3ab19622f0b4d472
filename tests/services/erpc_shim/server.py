# Generated-style server interface (erpcgen: server.py)
from __future__ import annotations

import erpc

from . import common, interface


class SensorService(erpc.server.Service):
    def __init__(self, handler):  # type: ignore[no-untyped-def]
        super(SensorService, self).__init__(interface.ISensor.SERVICE_ID)
        self._handler = handler
        self._methods = {
            interface.ISensor.ADD_ID: self._handle_add,
            interface.ISensor.SCALE_ID: self._handle_scale,
            interface.ISensor.READ_ID: self._handle_read,
            interface.ISensor.DESCRIBE_ID: self._handle_describe,
            interface.ISensor.LOG_ID: self._handle_log,
        }

    def _reply(self, codec, method_id, sequence):  # type: ignore[no-untyped-def]
        codec.reset()
        codec.start_write_message(erpc.codec.MessageInfo(
            type=erpc.codec.MessageType.kReplyMessage,
            service=interface.ISensor.SERVICE_ID,
            request=method_id,
            sequence=sequence))

    def _handle_add(self, sequence, codec):  # type: ignore[no-untyped-def]
        a = codec.read_int32()
        b = codec.read_int32()
        _result = self._handler.add(a, b)
        self._reply(codec, interface.ISensor.ADD_ID, sequence)
        codec.write_int32(_result)

    def _handle_scale(self, sequence, codec):  # type: ignore[no-untyped-def]
        n = codec.start_read_list()
        values = [codec.read_int32() for _ in range(n)]
        factor = codec.read_float()
        _result = self._handler.scale(values, factor)
        self._reply(codec, interface.ISensor.SCALE_ID, sequence)
        codec.start_write_list(len(_result))
        for v in _result:
            codec.write_float(v)

    def _handle_read(self, sequence, codec):  # type: ignore[no-untyped-def]
        channel = codec.read_int32()
        _result = self._handler.read(channel)
        self._reply(codec, interface.ISensor.READ_ID, sequence)
        _result._write(codec)

    def _handle_describe(self, sequence, codec):  # type: ignore[no-untyped-def]
        name = codec.read_string()
        _result = self._handler.describe(name)
        self._reply(codec, interface.ISensor.DESCRIBE_ID, sequence)
        codec.write_string(_result)

    def _handle_log(self, sequence, codec):  # type: ignore[no-untyped-def]
        text = codec.read_string()
        self._handler.log(text)


class SensorHandler(interface.ISensor):
    """The application's implementation (what a user writes next to the generated code)."""

    def __init__(self):  # type: ignore[no-untyped-def]
        self.logged = []

    def add(self, a, b):  # type: ignore[no-untyped-def]
        return a + b

    def scale(self, values, factor):  # type: ignore[no-untyped-def]
        return [v * factor for v in values]

    def read(self, channel):  # type: ignore[no-untyped-def]
        return common.Reading(channel, channel * 0.5, bytes([channel % 256]) * (channel % 200))

    def describe(self, name):  # type: ignore[no-untyped-def]
        if name == "logged":
            return ",".join(self.logged)
        return f"sensor {name} on ampipc"

    def log(self, text):  # type: ignore[no-untyped-def]
        self.logged.append(text)
