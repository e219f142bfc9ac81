"""Server configuration: `ServerConfig` and how it is assembled from its three sources.

Precedence (SPEC.md): the JSON file given with `-c` < `CKV_*` environment variables <
command-line flags. Every field has one name in all three: `data_dir` in the file,
`CKV_DATA_DIR` in the environment, `--data-dir` on the command line.

This module owns the server's field names, defaults, parsing of strings (sizes with
suffixes) and validation, and names the field and the source of every bad value. The
storage options and their ranges belong to `concordkv_mp.options` and are reused, not
restated. It must not start processes, open sockets or create files.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from concordkv_mp.errors import ConfigError
from concordkv_mp.ipc.protocol import DEFAULT_ENDPOINT
from concordkv_mp.options import KiB, StorageOptions, _check_int  # the storage options' range check

ENV_PREFIX = "CKV_"

# CKV_ variables that other parts of the project read; they are not config fields, so
# they must not be refused as misspelt ones.
NON_CONFIG_VARIABLES = frozenset(
    {
        "CKV_HISTORY_FILE",  # the interactive shell's history (concordkv_mp.cli.shell)
        "CKV_CRASH_SEED",  # replays a randomized crash test (tests/database/test_crash.py)
    }
)

# Room in a message beyond the largest key and value: the msgpack envelope, the request
# id and operation name, with generous slack so that a maximal SET is never refused.
ENVELOPE_ALLOWANCE = 64 * KiB

MAX_PARTITIONS = 256

# Fields counted in bytes accept size suffixes ("4MiB"); counts such as partitions or
# max_batch_keys do not, because "10K keys" could mean 10,000 or 10,240.
BYTE_SIZE_FIELDS = frozenset(
    {
        "memtable_size",
        "cache_size",
        "max_key_size",
        "max_value_size",
        "block_size",
        "target_file_size",
        "level_base_size",
        "snapshot_wal_size",
        "max_message_size",
    }
)


def _default_partitions() -> int:
    return min(os.cpu_count() or 1, MAX_PARTITIONS)


@dataclass(frozen=True)
class ServerConfig(StorageOptions):
    """Everything `concordkv serve` needs: the storage options plus the server's own.

    It extends StorageOptions because every storage option is a server option under the
    same name and with the same validation; one list of fields serves both.
    `max_message_size`, `pid_file` and `log_file` left as None are derived from other
    fields, so after construction they always hold a value.
    """

    data_dir: str = "./data"
    endpoint: str = DEFAULT_ENDPOINT
    partitions: int = field(default_factory=_default_partitions)
    # Bytes; enforced by ZeroMQ (ZMQ_MAXMSGSIZE): a larger message drops the connection.
    max_message_size: int | None = None
    max_batch_keys: int = 10_000
    scan_page_size: int = 1000
    # Messages ZeroMQ queues per peer before it blocks or drops (ZMQ_SNDHWM/RCVHWM).
    client_hwm: int = 1000
    pid_file: str | None = None
    log_file: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.max_message_size is None:
            object.__setattr__(self, "max_message_size", self._least_message_size())
        if self.pid_file is None:
            object.__setattr__(self, "pid_file", os.path.join(self.data_dir, "concordkv.pid"))
        if self.log_file is None:
            object.__setattr__(self, "log_file", os.path.join(self.data_dir, "concordkv.log"))
        for name in ("data_dir", "pid_file", "log_file"):
            _check_path(name, getattr(self, name))
        _check_endpoint(self.endpoint)
        # The embedded engine may run compactions in a thread (0); a server never does,
        # because its partitions must not spend their GIL on them.
        _check_int("compaction_workers", self.compaction_workers, 1, 64)
        _check_int("partitions", self.partitions, 1, MAX_PARTITIONS)
        _check_int("max_batch_keys", self.max_batch_keys, 1, 1_000_000)
        _check_int("scan_page_size", self.scan_page_size, 1, 100_000)
        _check_int("client_hwm", self.client_hwm, 1, 1_000_000)
        _check_int("max_message_size", self.max_message_size, 1, 1 << 40)
        if self.max_message_size < self._least_message_size():
            raise ConfigError(
                "max_message_size",
                f"{self.max_message_size} is below max_key_size + max_value_size + "
                f"{ENVELOPE_ALLOWANCE} ({self._least_message_size()}); "
                "a SET of the largest key and value would not fit in one message",
            )

    def _least_message_size(self) -> int:
        return self.max_key_size + self.max_value_size + ENVELOPE_ALLOWANCE

    def storage_options(self) -> StorageOptions:
        """The storage options alone, as `concordkv_mp.open()` takes them."""
        return StorageOptions(**{f.name: getattr(self, f.name) for f in fields(StorageOptions)})


FIELD_NAMES = tuple(f.name for f in fields(ServerConfig))
# str or int, from each field's annotation ("int | None" counts as int).
FIELD_TYPES = {
    name: int if int in (hint, *typing.get_args(hint)) else str
    for name, hint in typing.get_type_hints(ServerConfig).items()
}


def load_config(path: str | None, environ: Mapping[str, str], flags: Mapping[str, object]) -> ServerConfig:
    """Build the configuration: defaults < JSON file `path` < `CKV_*` in `environ` < `flags`.

    `flags` maps field names to values, as strings (parsed like environment values) or
    already typed. Raises ConfigError naming the field and where the bad value came from.
    """
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name, raw, source, from_text in _settings(path, environ, flags):
        values[name] = _parse(name, raw, source, from_text=from_text)
        sources[name] = source
    try:
        return ServerConfig(**values)
    except ConfigError as exc:
        if exc.field in sources:
            exc.args = (f"{exc.args[0]} (from {sources[exc.field]})",)
        raise


def _settings(path: str | None, environ: Mapping[str, str], flags: Mapping[str, object]):
    """(field name, raw value, where it came from, whether it is text) of every setting,
    lowest precedence first."""
    if path is not None:
        for name, raw in _read_json_object(path).items():
            yield name, raw, f"config file {path}", False
    for variable, raw in environ.items():
        if variable.startswith(ENV_PREFIX) and variable not in NON_CONFIG_VARIABLES:
            yield variable[len(ENV_PREFIX) :].lower(), raw, f"environment variable {variable}", True
    for name, raw in flags.items():
        yield name, raw, f"flag --{name.replace('_', '-')}", True


def parse_size(text: str) -> int:
    """`"4MiB"` -> 4194304. Suffixes are binary whatever their spelling (K, KB, KiB are
    all 1024), as in PostgreSQL; `_` may group digits. Raises ValueError."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (examples: 4096, 64KiB, 4MiB, 1GiB)")
    number, unit = match.groups()
    return int(number) * _UNITS[(unit or "").lower().rstrip("b").rstrip("i")]


_SIZE = re.compile(r"(\d[\d_]*)\s*([kmgt](?:i?b)?|b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _read_json_object(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError("config", f"{path} must hold a JSON object, not {type(document).__name__}")
    return document


def _parse(name: str, raw: object, source: str, *, from_text: bool) -> object:
    """The typed value of field `name`. Text (environment, flags) is parsed; a JSON
    value must already have the right type, except that sizes may be strings."""
    kind = FIELD_TYPES.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, FIELD_NAMES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known options are: {', '.join(sorted(FIELD_NAMES))}"
        raise ConfigError(name, f"unknown option (from {source}); {hint}")
    if kind is str:
        if not isinstance(raw, str):
            raise ConfigError(name, f"expected a string, got {_type_name(raw)} (from {source})")
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and (from_text or name in BYTE_SIZE_FIELDS):
        try:
            return parse_size(raw) if name in BYTE_SIZE_FIELDS else int(raw.strip())
        except ValueError:
            expected = "a size such as 4096 or 4MiB" if name in BYTE_SIZE_FIELDS else "an integer"
            raise ConfigError(name, f"expected {expected}, got {raw!r} (from {source})") from None
    raise ConfigError(name, f"expected an integer, got {_type_name(raw)} (from {source})")


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check_path(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(name, "expected a non-empty path")


def _check_endpoint(endpoint: object) -> None:
    if not isinstance(endpoint, str):
        raise ConfigError("endpoint", f"expected a string, got {_type_name(endpoint)}")
    scheme, _, rest = endpoint.partition("://")
    if scheme == "ipc" and rest:
        return
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if host and port.isdigit() and 1 <= int(port) <= 65535:
            return
    raise ConfigError("endpoint", f"{endpoint!r} is not tcp://host:port (port 1..65535) or ipc://path")
