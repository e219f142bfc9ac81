"""Server configuration (concordkv_mp/config.py): defaults, the precedence file < env <
flags, size suffixes, and that every bad value from every source is refused with a
ConfigError naming the field and where it came from."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import concordkv_mp
from concordkv_mp.config import (
    BYTE_SIZE_FIELDS,
    ENVELOPE_ALLOWANCE,
    FIELD_NAMES,
    FIELD_TYPES,
    ServerConfig,
    load_config,
    parse_size,
)
from concordkv_mp.errors import ConfigError
from concordkv_mp.options import (
    CACHE_POLICIES,
    COMPRESSIONS,
    ENGINES,
    FSYNC_POLICIES,
    KiB,
    MiB,
    WAL_RECOVERY_MODES,
    StorageOptions,
)


def write_json(tmp_path, document, name="config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def refused(path=None, environ=None, flags=None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {}, flags or {})
    return caught.value


def assert_names(error: ConfigError, field: str, fragment: str, source: str) -> None:
    """`error` is about `field`, says `fragment` and names where the value came from."""
    assert error.field == field
    assert fragment in str(error)
    assert source in str(error)


# ---------------------------------------------------------------- defaults


def test_defaults():
    config = load_config(None, {}, {})
    assert config == ServerConfig()
    assert config.data_dir == "./data"
    assert config.endpoint == "tcp://127.0.0.1:7379"
    assert config.partitions == min(os.cpu_count() or 1, 256)
    assert config.compaction_workers == 1
    assert config.max_batch_keys == 10_000
    assert config.scan_page_size == 1000
    assert config.client_hwm == 1000
    assert config.max_message_size == config.max_key_size + config.max_value_size + 64 * KiB
    assert config.pid_file == os.path.join("./data", "concordkv.pid")
    assert config.log_file == os.path.join("./data", "concordkv.log")
    for option in fields(StorageOptions):
        if option.name != "compaction_workers":
            assert getattr(config, option.name) == option.default, option.name


def test_derived_defaults_follow_the_fields_they_derive_from():
    config = load_config(None, {}, {"data_dir": "/srv/ckv", "max_value_size": "1MiB"})
    assert config.pid_file == "/srv/ckv/concordkv.pid"
    assert config.log_file == "/srv/ckv/concordkv.log"
    assert config.max_message_size == 16 * KiB + MiB + ENVELOPE_ALLOWANCE


def test_every_storage_option_is_a_config_field_and_storage_options_returns_them(tmp_path):
    assert {f.name for f in fields(StorageOptions)} <= set(FIELD_NAMES)
    config = load_config(None, {}, {"engine": "btree", "fsync": "none", "cache_size": "1MiB", "btree_order": "7"})
    options = config.storage_options()
    assert type(options) is StorageOptions
    assert options == StorageOptions(engine="btree", fsync="none", cache_size=MiB, btree_order=7)
    with concordkv_mp.open(str(tmp_path / "db"), **asdict(options)) as db:
        db.set(b"k", b"v")
        assert db.engine == "btree"


# ---------------------------------------------------------------- precedence


def test_env_overrides_file_and_flags_override_env(tmp_path):
    path = write_json(tmp_path, {"partitions": 2, "fsync": "always", "data_dir": "/from/file", "cache_size": 1024})
    environ = {"CKV_PARTITIONS": "3", "CKV_FSYNC": "none", "HOME": "/ignored"}
    flags = {"partitions": "4"}
    config = load_config(path, environ, flags)
    assert config.partitions == 4  # flag beats env beats file
    assert config.fsync == "none"  # env beats file
    assert config.data_dir == "/from/file"  # file beats the default
    assert config.cache_size == 1024
    assert config.endpoint == "tcp://127.0.0.1:7379"  # default when nobody sets it


def test_a_later_source_can_repair_an_earlier_bad_value(tmp_path):
    path = write_json(tmp_path, {"partitions": 0})
    assert load_config(path, {"CKV_PARTITIONS": "2"}, {}).partitions == 2


def test_flags_may_arrive_typed():
    assert load_config(None, {}, {"partitions": 5, "engine": "hash"}).partitions == 5


def test_variables_that_are_not_config_fields_are_left_alone():
    environ = {"CKV_HISTORY_FILE": "/tmp/h", "CKV_CRASH_SEED": "7", "PATH": "/bin", "ckv_partitions": "0"}
    assert load_config(None, environ, {}) == ServerConfig()


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4096", 4096),
        ("0", 0),
        ("64KiB", 64 * KiB),
        ("64kib", 64 * KiB),
        ("512KB", 512 * KiB),
        ("512k", 512 * KiB),
        ("4MiB", 4 * MiB),
        ("4 MB", 4 * MiB),
        ("1GiB", 1 << 30),
        ("2T", 2 << 40),
        ("100b", 100),
        ("1_000_000", 1_000_000),
        (" 8MiB ", 8 * MiB),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "-1", "1.5MiB", "4 MiBs", "4XB", "0x10", "four"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_sizes_accept_suffixes_from_every_source(tmp_path):
    path = write_json(tmp_path, {"memtable_size": "8MiB"})
    config = load_config(path, {"CKV_CACHE_SIZE": "16MiB"}, {"max_value_size": "256MiB"})
    assert (config.memtable_size, config.cache_size, config.max_value_size) == (8 * MiB, 16 * MiB, 256 * MiB)


def test_counts_do_not_accept_suffixes():
    error = refused(environ={"CKV_MAX_BATCH_KEYS": "10K"})
    assert error.field == "max_batch_keys"
    assert "expected an integer" in str(error)


def test_size_fields_are_integer_fields():
    assert BYTE_SIZE_FIELDS <= {name for name, kind in FIELD_TYPES.items() if kind is int}


# ---------------------------------------------------------------- the file's errors


@pytest.mark.parametrize(
    "document, field, fragment",
    [
        ({"partition": 4}, "partition", "did you mean 'partitions'"),
        ({"no_such_thing": 1}, "no_such_thing", "unknown option"),
        ({"partitions": "4"}, "partitions", "expected an integer, got str"),
        ({"partitions": True}, "partitions", "expected an integer, got bool"),
        ({"partitions": 2.0}, "partitions", "expected an integer, got float"),
        ({"partitions": None}, "partitions", "expected an integer, got null"),
        ({"memtable_size": [1]}, "memtable_size", "expected an integer, got list"),
        ({"memtable_size": "lots"}, "memtable_size", "expected a size"),
        ({"fsync": 1}, "fsync", "expected a string, got int"),
        ({"data_dir": None}, "data_dir", "expected a string, got null"),
        ({"partitions": 0}, "partitions", "0 is outside 1..256"),
        ({"partitions": 257}, "partitions", "257 is outside 1..256"),
        ({"fsync": "sometimes"}, "fsync", "not one of always, everysec, none"),
        ({"memtable_size": 1}, "memtable_size", "outside"),
        ({"compaction_workers": 0}, "compaction_workers", "0 is outside 1..64"),
        ({"max_batch_keys": 0}, "max_batch_keys", "outside 1..1000000"),
        ({"scan_page_size": 100_001}, "scan_page_size", "outside 1..100000"),
        ({"client_hwm": 0}, "client_hwm", "outside"),
        ({"endpoint": "localhost:7379"}, "endpoint", "is not tcp://host:port"),
        ({"data_dir": ""}, "data_dir", "non-empty path"),
        ({"max_message_size": 1024}, "max_message_size", "below max_key_size + max_value_size"),
        ({"l0_compaction_trigger": 8, "l0_stop_writes_trigger": 4}, "l0_stop_writes_trigger", "below"),
    ],
)
def test_file_errors_name_the_field_and_the_file(tmp_path, document, field, fragment):
    path = write_json(tmp_path, document)
    assert_names(refused(path), field, fragment, f"config file {path}")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object, not list"),
        ('"data_dir"', "must hold a JSON object, not str"),
        (b"\xff\xfe{}", "is not valid JSON"),
    ],
)
def test_an_unreadable_file_is_refused(tmp_path, content, fragment):
    path = tmp_path / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    error = refused(str(path))
    assert error.field == "config"
    assert fragment in str(error)


def test_a_missing_file_is_refused(tmp_path):
    error = refused(str(tmp_path / "nope.json"))
    assert error.field == "config"
    assert "cannot read" in str(error) and "nope.json" in str(error)


# ---------------------------------------------------------------- the environment's errors


@pytest.mark.parametrize(
    "environ, field, fragment",
    [
        ({"CKV_PARTITON": "4"}, "partiton", "did you mean 'partitions'"),
        ({"CKV_BOGUS": "x"}, "bogus", "unknown option"),
        ({"CKV_PARTITIONS": "four"}, "partitions", "expected an integer, got 'four'"),
        ({"CKV_PARTITIONS": ""}, "partitions", "expected an integer"),
        ({"CKV_PARTITIONS": "-1"}, "partitions", "-1 is outside 1..256"),
        ({"CKV_MEMTABLE_SIZE": "4 lots"}, "memtable_size", "expected a size"),
        ({"CKV_CACHE_POLICY": "mru"}, "cache_policy", "not one of lru, lfu, fifo, random"),
        ({"CKV_ENGINE": "LSM"}, "engine", "not one of"),
        ({"CKV_ENDPOINT": "tcp://127.0.0.1:0"}, "endpoint", "port 1..65535"),
        ({"CKV_PID_FILE": ""}, "pid_file", "non-empty path"),
        ({"CKV_MAX_VALUE_SIZE": "1GiB"}, "max_value_size", "outside"),
    ],
)
def test_environment_errors_name_the_field_and_the_variable(environ, field, fragment):
    (variable,) = environ
    assert_names(refused(environ=environ), field, fragment, f"environment variable {variable}")


# ---------------------------------------------------------------- the flags' errors


@pytest.mark.parametrize(
    "flags, field, fragment",
    [
        ({"partitions": "x"}, "partitions", "expected an integer"),
        ({"partitions": "0"}, "partitions", "outside"),
        ({"fsync": "never"}, "fsync", "not one of"),
        ({"wal_recovery": "lenient"}, "wal_recovery", "not one of strict, point_in_time"),
        ({"compaction_workers": "0"}, "compaction_workers", "outside 1..64"),
        ({"max_message_size": "1KiB"}, "max_message_size", "below"),
        ({"endpoint": "http://x:1"}, "endpoint", "is not tcp://host:port"),
        ({"no_such_flag": "1"}, "no_such_flag", "unknown option"),
    ],
)
def test_flag_errors_name_the_field_and_the_flag(flags, field, fragment):
    assert_names(refused(flags=flags), field, fragment, f"flag --{field.replace('_', '-')}")


def test_a_derived_check_names_the_field_it_checks_and_where_that_came_from(tmp_path):
    path = write_json(tmp_path, {"max_message_size": 2 * MiB})
    error = refused(path, flags={"max_value_size": "4MiB"})
    assert error.field == "max_message_size"
    assert f"config file {path}" in str(error)


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:7379",
        "tcp://localhost:1",
        "tcp://[::1]:65535",
        "tcp://*:7379",
        "ipc:///tmp/ckv.sock",
        "ipc://ckv",
    ],
)
def test_good_endpoints(endpoint):
    assert load_config(None, {"CKV_ENDPOINT": endpoint}, {}).endpoint == endpoint


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://127.0.0.1", "tcp://:7379", "tcp://h:65536", "tcp://h:port", "ipc://", "inproc://x", "127.0.0.1:7379"],
)
def test_bad_endpoints(endpoint):
    assert refused(flags={"endpoint": endpoint}).field == "endpoint"


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError) as caught:
        ServerConfig(partitions="4")
    assert caught.value.field == "partitions"


# ---------------------------------------------------------------- round trip


def _ints(low, high):
    return st.integers(min_value=low, max_value=high)


_FIELD_VALUES = {
    "engine": st.sampled_from(ENGINES),
    "fsync": st.sampled_from(FSYNC_POLICIES),
    "memtable_size": _ints(4 * KiB, 1024 * MiB),
    "max_immutable_memtables": _ints(1, 64),
    "cache_policy": st.sampled_from(CACHE_POLICIES),
    "cache_size": _ints(0, 1 << 40),
    "max_key_size": _ints(1, MiB),
    "max_value_size": _ints(0, 512 * MiB),
    "block_size": _ints(256, MiB),
    "compression": st.sampled_from(COMPRESSIONS),
    "bloom_bits_per_key": _ints(0, 64),
    "target_file_size": _ints(4 * KiB, 1024 * MiB),
    "level_base_size": _ints(4 * KiB, 1 << 40),
    "level_size_ratio": _ints(2, 100),
    "l0_compaction_trigger": _ints(1, 1000),
    "l0_stop_writes_trigger": _ints(1, 1000),
    "wal_recovery": st.sampled_from(WAL_RECOVERY_MODES),
    "compaction_workers": _ints(1, 64),
    "btree_order": _ints(3, 1000),
    "snapshot_wal_size": _ints(4 * KiB, 1 << 40),
    "data_dir": st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s),
    "endpoint": st.one_of(
        st.builds("tcp://{}:{}".format, st.sampled_from(["127.0.0.1", "localhost", "*", "[::1]"]), _ints(1, 65535)),
        st.builds("ipc://{}".format, st.text(min_size=1, max_size=20)),
    ),
    "partitions": _ints(1, 256),
    "max_message_size": _ints(0, 1 << 30),  # added to the least allowed size below
    "max_batch_keys": _ints(1, 1_000_000),
    "scan_page_size": _ints(1, 100_000),
    "client_hwm": _ints(1, 1_000_000),
    "pid_file": st.text(min_size=1, max_size=30),
    "log_file": st.text(min_size=1, max_size=30),
}


@st.composite
def valid_config_dicts(draw) -> dict:
    names = draw(st.lists(st.sampled_from(sorted(_FIELD_VALUES)), unique=True))
    document = {name: draw(_FIELD_VALUES[name]) for name in names}
    trigger = document.get("l0_compaction_trigger", 4)
    if document.get("l0_stop_writes_trigger", 12) < trigger:
        document["l0_stop_writes_trigger"] = trigger
    if "max_message_size" in document:
        least = document.get("max_key_size", 16 * KiB) + document.get("max_value_size", 16 * MiB) + ENVELOPE_ALLOWANCE
        document["max_message_size"] += least
    return document


def test_the_round_trip_strategy_covers_every_field():
    assert set(_FIELD_VALUES) == set(FIELD_NAMES)


@settings(max_examples=200, deadline=None)
@given(document=valid_config_dicts())
def test_any_valid_dict_round_trips_through_json(tmp_path_factory, document):
    directory = tmp_path_factory.mktemp("config")
    config = load_config(write_json(directory, document), {}, {})
    assert config == ServerConfig(**document)
    for name, value in document.items():
        assert getattr(config, name) == value
    again = load_config(write_json(directory, asdict(config), "again.json"), {}, {})
    assert again == config
