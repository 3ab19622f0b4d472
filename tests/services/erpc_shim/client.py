# Generated-style client shim (erpcgen: client.py)
from __future__ import annotations

import erpc

from . import common, interface


class SensorClient(interface.ISensor):
    def __init__(self, manager):  # type: ignore[no-untyped-def]
        super(SensorClient, self).__init__()
        self._clientManager = manager

    def _start(self, method_id, oneway=False):  # type: ignore[no-untyped-def]
        request = self._clientManager.create_request(isOneway=oneway)
        request.codec.start_write_message(erpc.codec.MessageInfo(
            type=(erpc.codec.MessageType.kOnewayMessage if oneway else erpc.codec.MessageType.kInvocationMessage),
            service=self.SERVICE_ID,
            request=method_id,
            sequence=request.sequence))
        return request

    def add(self, a, b):  # type: ignore[no-untyped-def]
        request = self._start(self.ADD_ID)
        request.codec.write_int32(a)
        request.codec.write_int32(b)
        self._clientManager.perform_request(request)
        return request.codec.read_int32()

    def scale(self, values, factor):  # type: ignore[no-untyped-def]
        request = self._start(self.SCALE_ID)
        request.codec.start_write_list(len(values))
        for v in values:
            request.codec.write_int32(v)
        request.codec.write_float(factor)
        self._clientManager.perform_request(request)
        n = request.codec.start_read_list()
        return [request.codec.read_float() for _ in range(n)]

    def read(self, channel):  # type: ignore[no-untyped-def]
        request = self._start(self.READ_ID)
        request.codec.write_int32(channel)
        self._clientManager.perform_request(request)
        return common.Reading()._read(request.codec)

    def describe(self, name):  # type: ignore[no-untyped-def]
        request = self._start(self.DESCRIBE_ID)
        request.codec.write_string(name)
        self._clientManager.perform_request(request)
        return request.codec.read_string()

    def log(self, text):  # type: ignore[no-untyped-def]
        request = self._start(self.LOG_ID, oneway=True)
        request.codec.write_string(text)
        self._clientManager.perform_request(request)
