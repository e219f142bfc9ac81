"""`concordkv serve` and `concordkv stop`: their flags, and turning them into a call
to the supervisor.

`serve` has a `--field-name` flag per config field (concordkv_mp/config.py); a flag's
value is passed on as typed, so that config.py parses and names a bad one exactly as it
does for environment variables; a bad one raises ConfigError. This module must not
start or signal processes itself: that is the supervisor's job.
"""

from __future__ import annotations

import argparse
import os
import sys

from concordkv_mp.config import (
    BYTE_SIZE_FIELDS,
    DEFAULT_ENDPOINT,
    FIELD_NAMES,
    FIELD_TYPES,
    MAX_PARTITIONS,
    ServerConfig,
    load_config,
)
from concordkv_mp.options import CACHE_POLICIES, COMPRESSIONS, ENGINES, FSYNC_POLICIES, WAL_RECOVERY_MODES

_SIZE = "bytes; suffixes KiB/MiB/GiB accepted"
FIELD_HELP = {
    "data_dir": "database directory (default ./data)",
    "endpoint": f"where clients connect: tcp://host:port or ipc://path (default {DEFAULT_ENDPOINT})",
    "partitions": f"partition processes, 1..{MAX_PARTITIONS} (default: the CPU count)",
    "compaction_workers": "compaction worker processes, 1..64 (default 1)",
    "engine": f"storage engine of a new database: {', '.join(ENGINES)}",
    "fsync": f"WAL fsync policy: {', '.join(FSYNC_POLICIES)} (default everysec)",
    "memtable_size": f"MemTable size that triggers a flush ({_SIZE})",
    "max_immutable_memtables": "frozen MemTables waiting for flush before writes stall",
    "cache_policy": f"block cache eviction: {', '.join(CACHE_POLICIES)}",
    "cache_size": f"block cache capacity ({_SIZE}); 0 disables it",
    "max_key_size": f"longest accepted key ({_SIZE})",
    "max_value_size": f"longest accepted value ({_SIZE})",
    "block_size": f"SSTable data block size ({_SIZE})",
    "compression": f"SSTable block compression: {', '.join(COMPRESSIONS)}",
    "bloom_bits_per_key": "bloom filter bits per key; 0 disables it",
    "target_file_size": f"compaction output file size ({_SIZE})",
    "level_base_size": f"size budget of level 1 ({_SIZE})",
    "level_size_ratio": "size growth between levels",
    "l0_compaction_trigger": "L0 files that start a compaction",
    "l0_stop_writes_trigger": "L0 files at which writes wait",
    "wal_recovery": f"on a damaged WAL record: {', '.join(WAL_RECOVERY_MODES)}",
    "btree_order": "B+tree order, 3..1000",
    "snapshot_wal_size": f"in-memory engines: WAL size that triggers a snapshot ({_SIZE})",
    "max_message_size": f"largest client message ({_SIZE}; default max_key_size + max_value_size + 64KiB)",
    "max_batch_keys": "most keys in one MGET/MSET/MDEL, 1..1000000 (default 10000)",
    "scan_page_size": "pairs per scan reply page, 1..100000 (default 1000)",
    "client_hwm": "messages queued per client before back-pressure (default 1000)",
    "pid_file": "pid file (default <data_dir>/concordkv.pid)",
    "log_file": "log file of a daemon (default <data_dir>/concordkv.log)",
}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="JSON configuration file")
    parser.add_argument("-d", "--daemon", action="store_true", help="detach and run in the background")
    group = parser.add_argument_group(
        "configuration", "each overrides the config file and its CKV_<NAME> environment variable"
    )
    for name in FIELD_HELP:  # in FIELD_HELP's order: the server's own fields first
        _add_field_flag(group, name)


def add_stop_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="JSON configuration file of the server")
    for name in ("data_dir", "pid_file"):
        _add_field_flag(parser, name)
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for it to exit (default 15)")


def _add_field_flag(parser, name: str) -> None:
    # SUPPRESS: a flag not given leaves no attribute, so it cannot mask the file or
    # the environment with a default.
    parser.add_argument(
        f"--{name.replace('_', '-')}",
        dest=name,
        default=argparse.SUPPRESS,
        metavar=_metavar(name),
        help=FIELD_HELP[name],
    )


def _metavar(name: str) -> str:
    if name in BYTE_SIZE_FIELDS:
        return "SIZE"
    if FIELD_TYPES[name] is int:
        return "N"
    if name.endswith(("_dir", "_file")):
        return "PATH"
    return "ENDPOINT" if name == "endpoint" else "NAME"


def _config(args: argparse.Namespace) -> ServerConfig:
    """The configuration from `-c`, CKV_* and the flags given; raises ConfigError for a
    bad one (the caller exits with status 2)."""
    flags = {name: getattr(args, name) for name in FIELD_NAMES if hasattr(args, name)}
    return load_config(args.config, os.environ, flags)


def run_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    # Imported here so that the other subcommands do not load the server's modules.
    from concordkv_mp.server.daemon import serve

    return serve(config, daemon=args.daemon)


def run_stop(args: argparse.Namespace) -> int:
    config = _config(args)
    from concordkv_mp.server.daemon import stop_server

    if stop_server(config, args.timeout):
        print(f"stopped the server of {config.data_dir} (pid file {config.pid_file})")
        return 0
    # stop_server's False covers both cases; the message must not claim to know which.
    print(
        f"no server stopped: {config.pid_file} names no live process, or it did not exit within {args.timeout:g} s",
        file=sys.stderr,
    )
    return 1
