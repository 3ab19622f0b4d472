"""``ampipc top REGION``: a live view of a running region (textual), or one plain/JSON snapshot.

Theory of operation
-------------------
Data and drawing are apart: `ampipc.tools.snapshot.take_snapshot` reads the region into a frozen
tree; `rates` derives messages/s and bytes/s from two of them; `render_text` turns one snapshot
(and optional rates) into the plain text of ``--once``; `TopApp` (textual) takes a snapshot every
``--interval`` seconds and fills its tables from it. Keys: ``s`` cycles the buffer sort (name,
fill, messages/s, bytes/s, waits), ``p`` pauses and resumes, ``q`` quits.

A region placed in a chip memory also shows its memory map (`memory_map_lines`): the chip, memory
and domain, then one line per range in chip addresses, as a linker map or CubeIDE's build analyzer
lists them (``0x38000400 - 0x380004ff  tx  message_buffer  256 B``); ``ampipc layout`` prints the
same lines. A plain region's output is unchanged.

The live view needs the optional ``textual`` package (``pip install 'ampipc[top]'``); ``--once``
and ``--json`` need only the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ..region import Region
from .snapshot import BufferRate, BufferView, ChipView, RegionSnapshot, rates, snapshot_to_json, take_snapshot

if TYPE_CHECKING:
    from textual.app import App

__all__ = ["SORT_KEYS", "add_parser", "fill_bar", "make_app", "memory_map_lines", "render_text", "sorted_buffers"]

SORT_KEYS = ("name", "fill", "msgs/s", "bytes/s", "waits")
_MIN_INTERVAL = 0.05
_MAX_INTERVAL = 3600.0


def fill_bar(fraction: float, width: int = 10) -> str:
    """``█████░░░░░  50%``: a text bar for a fill fraction in [0, 1]."""
    fraction = min(max(fraction, 0.0), 1.0)
    full = round(fraction * width)
    return "█" * full + "░" * (width - full) + f" {fraction * 100:3.0f}%"


def sorted_buffers(
    buffers: tuple[BufferView, ...], buffer_rates: dict[str, BufferRate] | None, key: str
) -> list[BufferView]:
    """The buffers in the order of `key` (one of `SORT_KEYS`; every key but ``name`` is descending)."""
    zero = BufferRate(0.0, 0.0)
    got = buffer_rates or {}
    keys: dict[str, Any] = {
        "name": lambda b: b.name,
        "fill": lambda b: (-b.fill, b.name),
        "msgs/s": lambda b: (-got.get(b.name, zero).messages_per_s, b.name),
        "bytes/s": lambda b: (-got.get(b.name, zero).bytes_per_s, b.name),
        "waits": lambda b: (-(b.statistics.send_waits + b.statistics.receive_waits), b.name),
    }
    if key not in keys:
        raise ValueError(f"sort key must be one of {', '.join(SORT_KEYS)}, not {key!r}")
    return sorted(buffers, key=keys[key])


def _peer(peer: Any) -> str:
    if peer is None:
        return "-"
    return f"{peer.pid}{'' if peer.alive else ' (dead)'}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return out


def buffer_rows(snap: RegionSnapshot, buffer_rates: dict[str, BufferRate] | None, sort: str) -> list[list[str]]:
    rows = []
    for b in sorted_buffers(snap.buffers, buffer_rates, sort):
        s = b.statistics
        rate = (buffer_rates or {}).get(b.name)
        rows.append([
            b.name, "message" if b.kind == "message_buffer" else "stream", f"{b.used}/{b.capacity}", fill_bar(b.fill),
            "-" if rate is None else f"{rate.messages_per_s:,.0f}", "-" if rate is None else f"{rate.bytes_per_s:,.0f}",
            str(s.messages_sent), str(s.messages_received), f"{s.send_waits}/{s.receive_waits}",
            f"{s.reader_wakeups}/{s.writer_wakeups}", str(s.peak_fill), _peer(b.writer), _peer(b.reader),
        ])
    return rows


BUFFER_HEADER = ["buffer", "kind", "used/cap", "fill", "msgs/s", "bytes/s", "sent", "received",
                 "waits s/r", "wake-ups r/w", "peak", "writer", "reader"]


def memory_map_lines(chip: ChipView, notes: dict[str, str] | None = None) -> list[str]:
    """The memory map of a chip region: a title line, then ``start - end  name  kind  size [note]``
    per range (header, objects, free tail), in chip addresses. `notes`: an extra column by object name."""
    power = "stays powered when D1/D2 sleep" if chip.stays_powered else "powered down when it sleeps"
    lines = [
        f"memory map: {chip.chip} {chip.memory} (domain {chip.domain_name}, {power}), "
        f"D-cache model {'on' if chip.cache_model else 'off'}",
        f"  {chip.memory} {chip.memory_base:#010x} - {chip.memory_base + chip.memory_size - 1:#010x} "
        f"({chip.memory_size} B); region {chip.base_address:#010x} - {chip.end_address:#010x} "
        f"({chip.end_address - chip.base_address + 1} B)",
    ]
    ranges = [chip.header, *chip.objects] + ([chip.free] if chip.free is not None else [])
    rows = [[f"{r.start:#010x} - {r.end:#010x}", r.name, r.kind, f"{r.size} B", (notes or {}).get(r.name, "")]
            for r in ranges]
    lines += ["  " + line for line in _table(["address range", "name", "kind", "size", ""], rows)]
    return lines


def render_text(snap: RegionSnapshot, buffer_rates: dict[str, BufferRate] | None = None, sort: str = "name") -> str:
    """The plain text of one snapshot (``top --once``)."""
    lines = [
        f"region {snap.name!r}: {snap.size} bytes, {snap.free} free; creator pid {snap.creator_pid} "
        f"({'alive' if snap.creator_alive else 'dead'}); processes: "
        + (", ".join(f"{p.pid}{'' if p.alive else ' (dead)'}" for p in snap.processes) or "none"),
        "",
    ]
    if snap.chip is not None:
        lines += [*memory_map_lines(snap.chip), ""]
    lines.append(f"buffers ({len(snap.buffers)})")
    lines += ["  " + line for line in _table(BUFFER_HEADER, buffer_rows(snap, buffer_rates, sort))]
    if snap.channels:
        lines += ["", f"channels ({len(snap.channels)})"]
        rows = [[c.name, c.strategy, str(c.channels), str(c.buffer_size), f"{c.cores[0]}<->{c.cores[1]}",
                 ", ".join(f"{k} {v}" for k, v in c.counters.items())] for c in snap.channels]
        lines += ["  " + line for line in _table(["channels", "strategy", "count", "buffer", "cores", "strategy state"], rows)]
    if snap.cores:
        lines += ["", "cores (interrupt lines)"]
        rows = [[c.name, str(c.core_id), f"{c.pending:#010x}", str(c.interrupts_raised), str(c.handlers_run),
                 str(c.events_received), f"{c.hsem_enabled:#010x}", f"{c.hsem_status:#010x}",
                 "".join("01"[e] for e in c.exti_enabled)] for c in snap.cores]
        lines += ["  " + line for line in _table(
            ["core", "COREID", "pending", "raised", "handled", "events", "HSEM IER", "HSEM ISR", "EXTI 0/1"], rows)]
        taken = [s for s in snap.semaphores if s.owner_core is not None]
        lines += ["", f"HSEM: {len(taken)} of {len(snap.semaphores)} taken"]
        lines += [f"  {s.sem_id:2d}  {s.owner_name or '?'} (COREID {s.owner_core}) process {s.owner_process}" for s in taken]
    if snap.rpmsg:
        lines += ["", "rpmsg links"]
        rows = [[r.name, "-" if r.status is None else f"{r.status:#04x}",
                 " ".join(f"{a}/{u}" for a, u in r.vrings) or "-", _peer(r.driver), _peer(r.device)] for r in snap.rpmsg]
        lines += ["  " + line for line in _table(["link", "status", "vrings avail/used", "driver", "device"], rows)]
        for r in snap.rpmsg:
            for side, name, addr, dest in r.endpoints:
                bound = "unbound" if dest is None else f"-> {dest:#x}"
                lines.append(f"  {r.name} {side} endpoint {name or '(no name)'!r} at {addr:#x} {bound}")
    if snap.pools:
        lines += ["", "payload pools"]
        lines += [f"  {p.name}: " + ", ".join(f"{k} {v}" for k, v in p.statistics.items()) for p in snap.pools]
    if snap.bridges:
        lines += ["", "zenoh bridges"]
        for b in snap.bridges:
            lines.append(f"  {b.name}: pid {b.pid} ({'alive' if b.alive else 'dead'}), "
                         f"{'running' if b.running else 'stopped'}, {len(b.routes)} routes")
            lines += [f"    {r.get('direction')} {r.get('local')} <-> {r.get('key')}: {r.get('messages')} messages, "
                      f"{r.get('bytes')} bytes, {r.get('drops')} drops" for r in b.routes]
    if snap.others:
        lines += ["", "other objects"]
        lines += [f"  {o.name} ({o.kind}, {o.size} bytes at {o.offset:#x})" for o in snap.others]
    return "\n".join(lines)


# ---- the live view ------------------------------------------------------------------------------


def make_app(region: Region, interval: float, sort: str = "name", *, observer: int | None = None) -> App[int]:
    """The textual application showing `region`, refreshed every `interval` seconds (`observer`: the
    pid left out of the process list, see `take_snapshot`)."""
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import VerticalScroll
    from textual.widgets import DataTable, Footer, Header, Static

    class TopApp(App[int]):
        TITLE = "ampipc top"
        BINDINGS = [
            Binding("s", "cycle_sort", "sort"),
            Binding("p", "toggle_pause", "pause"),
            Binding("q", "quit", "quit"),
        ]
        CSS = "DataTable { height: auto; max-height: 24; } .section { margin-top: 1; text-style: bold; }"

        def __init__(self) -> None:
            super().__init__()
            self.region = region
            self.interval = interval
            self.sort = sort
            self.paused = False
            self.previous: RegionSnapshot | None = None
            self.snapshot: RegionSnapshot | None = None
            self.buffer_rates: dict[str, BufferRate] | None = None
            self.refreshes = 0
            self.observer = observer

        def compose(self) -> ComposeResult:
            yield Header()
            with VerticalScroll():
                yield Static(id="summary")
                yield Static(id="chip")
                yield Static("buffers", classes="section")
                yield DataTable(id="buffers", zebra_stripes=True)
                yield Static("channels", classes="section")
                yield DataTable(id="channels")
                yield Static("cores and interrupt lines", classes="section")
                yield DataTable(id="cores")
                yield Static(id="hsem")
                yield Static(id="extra")
            yield Footer()

        def on_mount(self) -> None:
            self.query_one("#buffers", DataTable).add_columns(*BUFFER_HEADER)
            self.query_one("#channels", DataTable).add_columns("channels", "strategy", "count", "buffer", "cores",
                                                               "strategy state")
            self.query_one("#cores", DataTable).add_columns("core", "COREID", "pending", "raised", "handled",
                                                            "events", "HSEM IER", "HSEM ISR", "EXTI 0/1")
            self.refresh_view()
            self.set_interval(self.interval, self.refresh_view)

        def refresh_view(self) -> None:
            if self.paused:
                return
            snap = take_snapshot(self.region, observer=self.observer)
            self.previous, self.snapshot = self.snapshot, snap
            self.buffer_rates = None if self.previous is None else rates(self.previous, snap)
            self.refreshes += 1
            self.draw()

        def draw(self) -> None:
            snap = self.snapshot
            if snap is None:
                return
            state = "PAUSED" if self.paused else f"every {self.interval:g} s"
            self.sub_title = f"{snap.name} - sort: {self.sort} - {state}"
            self.query_one("#summary", Static).update(render_text(snap).split("\n", 1)[0])
            self.query_one("#chip", Static).update("\n".join(memory_map_lines(snap.chip)) if snap.chip else "")
            table = self.query_one("#buffers", DataTable)
            table.clear()
            for row in buffer_rows(snap, self.buffer_rates, self.sort):
                table.add_row(*row, key=row[0])
            channels = self.query_one("#channels", DataTable)
            channels.clear()
            for c in snap.channels:
                channels.add_row(c.name, c.strategy, str(c.channels), str(c.buffer_size), f"{c.cores[0]}<->{c.cores[1]}",
                                 ", ".join(f"{k} {v}" for k, v in c.counters.items()))
            cores = self.query_one("#cores", DataTable)
            cores.clear()
            for k in snap.cores:
                cores.add_row(k.name, str(k.core_id), f"{k.pending:#010x}", str(k.interrupts_raised),
                              str(k.handlers_run), str(k.events_received), f"{k.hsem_enabled:#010x}",
                              f"{k.hsem_status:#010x}", "".join("01"[e] for e in k.exti_enabled))
            cells = [f"{s.sem_id:2d}:{'--' if s.owner_core is None else (s.owner_name or str(s.owner_core))[:3]}"
                     + ("" if s.owner_process is None else f"/{s.owner_process}") for s in snap.semaphores]
            self.query_one("#hsem", Static).update(
                "HSEM  " + "  ".join(cells) if cells else "no virtual hardware in this region")
            text = render_text(snap)
            tail = text.split("\nrpmsg links", 1)
            extra = "rpmsg links" + tail[1] if len(tail) == 2 else ""
            if not extra:
                for marker in ("\npayload pools", "\nzenoh bridges", "\nother objects"):
                    if marker in text:
                        extra = text[text.index(marker) + 1:]
                        break
            self.query_one("#extra", Static).update(extra)

        def action_cycle_sort(self) -> None:
            self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
            self.draw()

        def action_toggle_pause(self) -> None:
            self.paused = not self.paused
            self.draw()

    return TopApp()


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if not _MIN_INTERVAL <= value <= _MAX_INTERVAL:
        raise argparse.ArgumentTypeError(f"the interval must be {_MIN_INTERVAL:g} to {_MAX_INTERVAL:g} seconds, not {text}")
    return value


def _cmd_top(args: argparse.Namespace) -> int:
    with Region.attach(args.region, observe=True) as region:  # an observer: it never keeps a dead peer alive
        if args.json or args.once:
            first = take_snapshot(region, observer=os.getpid())
            buffer_rates = None
            if args.rates:
                time.sleep(args.interval)
                second = take_snapshot(region, observer=os.getpid())
                buffer_rates, first = rates(first, second), second
            if args.json:
                json.dump(snapshot_to_json(first, buffer_rates), sys.stdout, indent=2)
                sys.stdout.write("\n")
            else:
                print(render_text(first, buffer_rates, args.sort))
            return 0
        try:
            app = make_app(region, args.interval, args.sort, observer=os.getpid())
        except ImportError:
            print("ampipc: error: the live view needs textual: pip install 'ampipc[top]' "
                  "(or use --once / --json)", file=sys.stderr)
            return 2
        app.run()
        return 0


def add_parser(subparsers: Any) -> None:
    """Add ``top`` to the ``ampipc`` command line."""
    top = subparsers.add_parser("top", help="live view of a running region (buffers, channels, HSEM, lines, links)")
    top.add_argument("region")
    top.add_argument("--interval", type=_interval, default=1.0, help="refresh every this many seconds (default 1)")
    top.add_argument("--sort", choices=SORT_KEYS, default="name", help="buffer order (key s cycles it)")
    top.add_argument("--once", action="store_true", help="print one plain snapshot and exit")
    top.add_argument("--json", action="store_true", help="print one JSON snapshot and exit")
    top.add_argument("--rates", action="store_true",
                     help="with --once/--json: take two snapshots --interval apart and include the rates")
    top.set_defaults(func=_cmd_top)
