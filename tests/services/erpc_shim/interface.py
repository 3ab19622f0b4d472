# Generated-style interface (erpcgen: interface.py)
from __future__ import annotations


class ISensor(object):
    SERVICE_ID = 1
    ADD_ID = 1
    SCALE_ID = 2
    READ_ID = 3
    DESCRIBE_ID = 4
    LOG_ID = 5

    def add(self, a, b):  # type: ignore[no-untyped-def]
        raise NotImplementedError()

    def scale(self, values, factor):  # type: ignore[no-untyped-def]
        raise NotImplementedError()

    def read(self, channel):  # type: ignore[no-untyped-def]
        raise NotImplementedError()

    def describe(self, name):  # type: ignore[no-untyped-def]
        raise NotImplementedError()

    def log(self, text):  # type: ignore[no-untyped-def]
        raise NotImplementedError()
