"""A small eRPC service written the way ``erpcgen`` writes Python output (IDL below).

    program sensor
    struct Reading { int32 channel; float value; binary raw; }
    interface Sensor {
        add(int32 a, int32 b) -> int32
        scale(list<int32> values, float factor) -> list<float>
        read(int32 channel) -> Reading
        describe(string name) -> string
        oneway log(string text)
    }

``interface.py``, ``client.py``, ``server.py`` and ``common.py`` follow erpcgen's layout: ids on
the interface class, a client shim writing through ``ClientManager`` requests, and a server-side
``erpc.server.Service`` whose handlers read arguments with the codec and write the reply.
"""
