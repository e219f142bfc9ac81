"""Showing a server's STATUS: `rich` tables (server, processes, partitions, I/O
optimizer), the same as plain text for the shell, or JSON; and `concordkv status`.

The input is the dict `Client.status()` returns (its shape is documented on the client;
a section the server leaves out is not shown). This module only renders; it must not
compute or change anything on the server.
"""

from __future__ import annotations

import io
import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

import concordkv_mp


def run_status(endpoint: str, *, timeout: float, as_json: bool) -> int:
    """`concordkv status`: ask the server at `endpoint`, print its status; exit code 0.
    A ConcordKVError (unreachable, timeout) propagates: cli/main.py reports it."""
    client = concordkv_mp.connect(endpoint, timeout=timeout)
    try:
        status = client.status()
    finally:
        client.close()
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        Console().print(*status_tables(status))
    return 0


def render_text(status: dict, width: int = 100) -> str:
    """The tables as plain text (no colour), `width` columns wide at most."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(*status_tables(status))
    return buffer.getvalue().rstrip("\n")


def status_tables(status: dict) -> list[Table]:
    tables = [_server_table(status["server"])]
    if status.get("processes"):
        tables.append(_process_table(status["processes"]))
    if status.get("partitions"):
        tables.append(_partition_table(status["partitions"]))
    if status.get("io_optimizer"):
        tables.append(_io_table(status["io_optimizer"]))
    return tables


def _server_table(server: dict) -> Table:
    table = Table(title="Server", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for label, value in (
        ("version", f"ConcordKV-MP {server['version']}"),
        ("endpoint", server["endpoint"]),
        ("data directory", server["data_dir"]),
        ("engine", server["engine"]),
        ("fsync", server["fsync"]),
        ("partitions", server["partitions"]),
        ("protocol", server["protocol"]),
        ("uptime", _duration(server["uptime"])),
    ):
        table.add_row(label, Text(str(value)))
    return table


def _process_table(processes: list[dict]) -> Table:
    table = Table(title="Processes")
    for header in ("role", "#", "pid", "alive", "CPU %", "memory", "uptime", "restarts"):
        table.add_column(header, justify="left" if header in ("role", "alive") else "right")
    for process in processes:
        table.add_row(
            process["role"],
            _optional(process.get("index")),
            _optional(process.get("pid")),
            Text("yes") if process["alive"] else Text("no", style="bold red"),
            f"{process['cpu_percent']:.1f}",
            _bytes(process["rss"]),
            _duration(process["uptime"]),
            str(process["restarts"]),
        )
    table.caption = (
        f"total: CPU {sum(p['cpu_percent'] for p in processes):.1f} %, "
        f"memory {_bytes(sum(p['rss'] for p in processes))}"
    )
    return table


def _partition_table(partitions: list[dict]) -> Table:
    table = Table(title="Partitions")
    for header in ("#", "slots", "endpoint", "engine", "keys", "memtable", "files", "pending"):
        # Only the endpoint (long, and in --json in full) may be cut when space is short.
        table.add_column(
            header,
            justify="left" if header in ("endpoint", "engine", "files") else "right",
            no_wrap=header != "endpoint",
            overflow="ellipsis",
        )
    for partition in partitions:
        first, last = partition["slots"]
        table.add_row(
            str(partition["index"]),
            f"{first}-{last}",
            Text(partition["endpoint"]),
            partition["engine"],
            f"{partition['keys']:,}",
            _bytes(partition["memtable_bytes"]),
            _levels(partition["files_per_level"]),
            str(partition["pending_compactions"]),
        )
    table.caption = f"total: {sum(p['keys'] for p in partitions):,} keys; files: per level; pending: compactions queued"
    return table


def _io_table(stats: dict) -> Table:
    table = Table(title="I/O optimizer", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", justify="right")
    table.add_row("fsync", stats["fsync"])
    table.add_row("bytes written", _bytes(stats["bytes_written"]))
    table.add_row("fsyncs", f"{stats['fsyncs']:,}")
    table.add_row("write batches", f"{stats['write_batches']:,}")
    table.add_row("mean batch", _bytes(stats["mean_batch_bytes"]))
    return table


def _optional(value) -> str:
    return "-" if value is None else str(value)


def _levels(files_per_level: list[int]) -> str:
    """Only the levels that hold files ("L0:2 L1:5"): seven columns of mostly zeros
    would bury the figures that matter."""
    shown = [f"L{level}:{count}" for level, count in enumerate(files_per_level) if count]
    return " ".join(shown) or "-"


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s"
