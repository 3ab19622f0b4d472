"""Two hosts joined only through Zenoh on 127.0.0.1: real processes, real regions, real blocking.

Host A is this test process (its region, a producer thread and a consumer) plus a bridge process
(the ``ampipc bridge`` command); host B is a child with its own region and its own bridge.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ampipc import MessageBuffer, Region
from ampipc.bridge import read_bridge_statistics

from . import _support as S

pytestmark = pytest.mark.timeout(300)

COUNT = 10_000


def _wait(predicate: Callable[[], bool], what: str, timeout: float = S.GENEROUS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _bridge_cli(spawn: Any, region: Region, *args: str) -> Any:
    return spawn(S.run_cli, ["bridge", region.name, "--name", "a", *args])


def _route(region: Region, direction: str) -> Any:
    """Bridge A's route in `direction`, from its statistics in the region (None until it has started)."""
    for bridge in read_bridge_statistics(region):
        if bridge.name == "a":
            for route in bridge.routes:
                if route.direction == direction:
                    return route
    return None


def _exported(region: Region) -> int:
    route = _route(region, "export")
    return 0 if route is None else int(route.messages)


def _receive_all(buffer: MessageBuffer, count: int) -> list[int]:
    return [S.check_message(buffer.receive(timeout=S.GENEROUS), seq) for seq in range(count)]


def test_two_bridges_ten_thousand_messages_each_way(spawn: Any, make_region: Any, unique_name: Any) -> None:
    region = make_region(1 << 22)
    to_b = MessageBuffer.create(region, "to_b", 1 << 16)
    from_b = MessageBuffer.create(region, "from_b", 1 << 16)
    endpoint = S.free_endpoint()
    key = f"ampipc-test/{os.getpid()}/{unique_name()}"
    bridge_a = _bridge_cli(spawn, region, "--export", f"to_b={key}/a2b", "--import", f"{key}/b2a=from_b",
                           "--listen", endpoint)
    host_b, results, go, done, _ = S.spawn_host_b(spawn, unique_name("b"), endpoint, f"{key}/a2b", f"{key}/b2a",
                                                  COUNT, COUNT)
    go.set()
    producer = threading.Thread(target=S.send_all, args=(to_b, COUNT), daemon=True)
    producer.start()
    assert _receive_all(from_b, COUNT) == list(range(COUNT))  # every message of B, whole and in order
    producer.join(S.GENEROUS)
    report = results.get(timeout=S.GENEROUS)
    assert report.get("error") is None and report["ok"], report
    assert report["exact"] and report["received"] == COUNT  # every message of A reached B in order
    done.set()
    final = results.get(timeout=S.GENEROUS)
    assert spawn.join(host_b) == 0, final
    assert sorted(final["routes"]) == [("export", COUNT, 0, 0, 0), ("import", COUNT, 0, 0, 0)]
    # Bridge A's statistics in region A, as `ampipc top` reads them.
    _wait(lambda: _exported(region) == COUNT and _route(region, "import").messages == COUNT,
          "bridge A's shared counters")
    exported, imported = _route(region, "export"), _route(region, "import")
    assert exported.bytes == sum(len(S.make_message(i)) for i in range(COUNT)) == imported.bytes
    assert (exported.drops, exported.lost, imported.drops, imported.lost) == (0, 0, 0, 0)
    assert imported.lag_ns_max >= imported.lag_ns_last > 0
    # Host B has closed its bridge: A sees its liveliness tokens go, on both routes.
    _wait(lambda: [(r.peers, r.peer_losses, r.state) for r in (_route(region, "export"), _route(region, "import"))]
          == [(0, 1, "peer lost")] * 2, "bridge A to see host B's bridge go")
    bridge_a.terminate()  # SIGTERM: an orderly stop
    assert spawn.join(bridge_a) == 128 + signal.SIGTERM
    (record,) = read_bridge_statistics(region)
    assert not record.alive and not record.running


def test_slow_consumer_back_pressure_loses_nothing(spawn: Any, make_region: Any, unique_name: Any) -> None:
    count, size = 1_200, 32 * 1024
    region = make_region(1 << 22)
    to_b = MessageBuffer.create(region, "to_b", 2 * (size + 64))
    endpoint = S.free_endpoint()
    key = f"ampipc-test/{os.getpid()}/{unique_name()}/slow"
    bridge_a = _bridge_cli(spawn, region, "--export", f"to_b={key}", "--listen", endpoint)
    host_b, results, go, done, progress = S.spawn_host_b(
        spawn, unique_name("b"), endpoint, key, "unused", count, 0, size=size, buffer_size=2 * (size + 64),
        fifo_capacity=4, slow=True,
    )
    producer = threading.Thread(target=S.send_all, args=(to_b, count, size), daemon=True)
    producer.start()
    # B reads nothing yet: once the flow has started, the back-pressure must reach A's producer
    # through both bridges and Zenoh (the 39 MB it sends are far more than every queue between).
    _wait(lambda: _exported(region) >= 100, "the flow to start")
    time.sleep(1.0)
    assert producer.is_alive() and progress.value == 0
    assert to_b.statistics().send_waits > 0
    go.set()
    report = results.get(timeout=S.GENEROUS * 2)
    assert report.get("error") is None and report["ok"], report
    assert report["exact"] and report["received"] == count
    producer.join(S.GENEROUS)
    assert not producer.is_alive()
    done.set()
    final = results.get(timeout=S.GENEROUS)
    assert spawn.join(host_b) == 0
    assert final["routes"] == [("import", count, 0, 0, 0)]
    bridge_a.terminate()
    assert spawn.join(bridge_a) == 128 + signal.SIGTERM


def test_bridge_killed_and_restarted(spawn: Any, make_region: Any, unique_name: Any) -> None:
    count = 6_000
    region = make_region(1 << 22)
    to_b = MessageBuffer.create(region, "to_b", 4096)
    endpoint = S.free_endpoint()
    key = f"ampipc-test/{os.getpid()}/{unique_name()}/restart"
    host_b, results, go, done, progress = S.spawn_host_b(spawn, unique_name("b"), endpoint, key, "unused", count, 0,
                                                         listen=True)
    go.set()
    args = ("--export", f"to_b={key}", "--connect", endpoint)
    first = _bridge_cli(spawn, region, *args)
    killed = threading.Event()  # the producer holds the rest of the stream until the bridge is killed
    producer = threading.Thread(target=S.send_all, args=(to_b, count), kwargs={"pause_at": 2_000, "resume": killed},
                                daemon=True)
    producer.start()
    _wait(lambda: progress.value >= 1_000, "host B to receive the first messages")
    os.kill(first.pid, signal.SIGKILL)
    killed.set()
    assert spawn.join(first) == -signal.SIGKILL
    received_at_kill = progress.value
    assert received_at_kill < count
    (dead,) = read_bridge_statistics(region)
    assert not dead.alive
    second = _bridge_cli(spawn, region, *args)  # the same name: it takes over the dead one's statistics
    report = results.get(timeout=S.GENEROUS * 2)
    assert report.get("error") is None and report["ok"], report
    assert report["ordered"]  # every message B got is intact and in order, across the restart
    done.set()
    final = results.get(timeout=S.GENEROUS)
    assert spawn.join(host_b) == 0
    ((direction, messages, drops, lost, peer_losses),) = final["routes"]
    assert direction == "import" and messages == report["received"] and drops == 0
    assert peer_losses >= 1  # B saw bridge A's liveliness token vanish
    # What the dead bridge took from the buffer but never delivered is counted as lost by B, except
    # at most one message taken in the instant between its receive and its bookkeeping.
    assert 0 <= count - messages - lost <= 1
    producer.join(S.GENEROUS)
    (record,) = read_bridge_statistics(region)
    assert record.alive and record.pid == second.pid
    second.terminate()
    assert spawn.join(second) == 128 + signal.SIGTERM
