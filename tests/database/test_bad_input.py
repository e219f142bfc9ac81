"""Bad input to the embedded database: every mistake raises the documented error, and the
database keeps working afterwards.

Checks wrong key and value types (int, bool, None, float, list, dict) on every method,
empty keys, str that UTF-8 cannot encode, keys and values at their size limit (accepted) and one byte over (rejected,
str measured in UTF-8 bytes), bad option names and values (ConfigError naming the field),
use after close (ClosedError, also for an open iterator), and a second open of the same
directory (DatabaseLockedError, the first handle unharmed). Each error is a ConcordKVError
with its stable `.code`; a rejected batch writes nothing; after every error a set/get round
trip still works.
"""

from __future__ import annotations

import pytest

import concordkv_mp
from concordkv_mp.errors import (
    ClosedError,
    ConcordKVError,
    ConfigError,
    DatabaseLockedError,
    EmptyKeyError,
    InvalidTypeError,
    KeyTooLargeError,
    ValueTooLargeError,
)

# The documented codes; they are a public contract and must never change.
CODES = {
    InvalidTypeError: "INVALID_TYPE",
    EmptyKeyError: "EMPTY_KEY",
    KeyTooLargeError: "KEY_TOO_LARGE",
    ValueTooLargeError: "VALUE_TOO_LARGE",
    ConfigError: "INVALID_CONFIG",
    ClosedError: "CLOSED",
    DatabaseLockedError: "LOCKED",
}

BAD_TYPES = [1, True, None, 1.5, [b"k"], {b"k": b"v"}, (b"k",), object()]
BAD_TYPE_IDS = ["int", "bool", "None", "float", "list", "dict", "tuple", "object"]
EMPTY_KEYS = [b"", "", bytearray(), memoryview(b"")]

MAX_KEY = 64
MAX_VALUE = 1024


def expect(error_type, call):
    """Run `call`, check it raises exactly the documented error, and return the error."""
    with pytest.raises(error_type) as info:
        call()
    error = info.value
    assert isinstance(error, ConcordKVError)
    assert error.code == CODES[error_type]
    return error


def still_works(db, *untouched_keys):
    """The database answers normally after an error, and the failed call wrote nothing."""
    for key in untouched_keys:
        assert db.get(key) is None
    db.set(b"probe", b"after-error")
    assert db.get(b"probe") == b"after-error"
    assert db.delete(b"probe")


@pytest.fixture
def sized_db(tmp_path):
    db = concordkv_mp.open(str(tmp_path / "db"), fsync="none", max_key_size=MAX_KEY, max_value_size=MAX_VALUE)
    yield db
    db.close()


# -- types --------------------------------------------------------------------------------

KEY_CALLS = {
    "get": lambda db, k: db.get(k),
    "set": lambda db, k: db.set(k, b"v"),
    "delete": lambda db, k: db.delete(k),
    "exists": lambda db, k: db.exists(k),
    "update": lambda db, k: db.update(k, b"v"),
    "mget": lambda db, k: db.mget([b"ok", k]),
    "mset-pairs": lambda db, k: db.mset([(b"ok", b"v"), (k, b"v")]),
    "mdelete": lambda db, k: db.mdelete([b"ok", k]),
}


@pytest.mark.parametrize("call", KEY_CALLS.values(), ids=KEY_CALLS.keys())
@pytest.mark.parametrize("bad", BAD_TYPES, ids=BAD_TYPE_IDS)
def test_wrong_key_type(db, call, bad):
    db.set(b"ok", b"before")
    error = expect(InvalidTypeError, lambda: call(db, bad))
    assert isinstance(error, TypeError)
    # A batch is rejected as a whole: b"ok" keeps its value.
    assert db.get(b"ok") == b"before"
    still_works(db)


VALUE_CALLS = {
    "set": lambda db, v: db.set(b"k", v),
    "update": lambda db, v: db.update(b"k", v),
    "mset-pairs": lambda db, v: db.mset([(b"other", b"v"), (b"k", v)]),
    "mset-dict": lambda db, v: db.mset({b"other": b"v", b"k": v}),
}


@pytest.mark.parametrize("call", VALUE_CALLS.values(), ids=VALUE_CALLS.keys())
@pytest.mark.parametrize("bad", BAD_TYPES, ids=BAD_TYPE_IDS)
def test_wrong_value_type(db, call, bad):
    db.set(b"k", b"before")
    expect(InvalidTypeError, lambda: call(db, bad))
    assert db.get(b"k") == b"before"
    still_works(db, b"other")


@pytest.mark.parametrize("bad", [1, 1.5, [b"k"], {b"k": 1}], ids=["int", "float", "list", "dict"])
@pytest.mark.parametrize("argument", ["start", "end", "prefix"])
def test_wrong_scan_bound_type(db, argument, bad):
    db.set(b"k", b"v")
    expect(InvalidTypeError, lambda: list(db.scan(**{argument: bad})))
    still_works(db)


@pytest.mark.parametrize(
    "key, value",
    [(bytearray(b"ba"), bytearray(b"v1")), (memoryview(b"mv"), memoryview(b"v2")), ("str-é", "välue")],
    ids=["bytearray", "memoryview", "str"],
)
def test_accepted_types_read_back_as_bytes(db, key, value):
    db.set(key, value)
    raw_key = key.encode() if isinstance(key, str) else bytes(key)
    raw_value = value.encode() if isinstance(value, str) else bytes(value)
    got = db.get(raw_key)
    assert type(got) is bytes and got == raw_value
    assert db.get(key) == raw_value
    assert list(db.scan()) == [(raw_key, raw_value)]


@pytest.mark.parametrize(
    "call",
    [
        lambda db: db.set("\ud800", b"v"),
        lambda db: db.set(b"k", "\udfff"),
        lambda db: db.get("\ud800"),
        lambda db: db.mset([(b"ok", b"v"), ("\ud800", b"v")]),
    ],
    ids=["set-key", "set-value", "get", "mset"],
)
def test_str_that_utf8_cannot_encode(db, call):
    # A lone surrogate is a str of the right type whose value cannot be encoded: the
    # documented INVALID_ARGUMENT, not a bare UnicodeEncodeError from deep inside.
    with pytest.raises(ConcordKVError) as info:
        call(db)
    assert info.value.code == "INVALID_ARGUMENT"
    assert isinstance(info.value, ValueError)
    still_works(db, b"ok", b"k")


def test_empty_value_is_stored_not_missing(db):
    db.set(b"k", b"")
    db.flush()
    assert db.get(b"k") == b""
    assert db.exists(b"k")
    assert db.count() == 1


# -- empty keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("call", KEY_CALLS.values(), ids=KEY_CALLS.keys())
@pytest.mark.parametrize("empty", EMPTY_KEYS, ids=["bytes", "str", "bytearray", "memoryview"])
def test_empty_key(db, call, empty):
    db.set(b"ok", b"before")
    error = expect(EmptyKeyError, lambda: call(db, empty))
    assert isinstance(error, ValueError)
    assert db.get(b"ok") == b"before"
    assert db.count() == 1
    still_works(db)


# -- size limits --------------------------------------------------------------------------


def test_key_at_limit_is_accepted_and_survives_reopen(tmp_path):
    path = str(tmp_path / "db")
    options = dict(fsync="none", max_key_size=MAX_KEY, max_value_size=MAX_VALUE)
    with concordkv_mp.open(path, **options) as db:
        db.set(b"k" * MAX_KEY, b"v" * MAX_VALUE)
        db.set("é" * (MAX_KEY // 2), "ü" * (MAX_VALUE // 2))  # 2 bytes per character
        db.mset([(b"m" * MAX_KEY, b"w" * MAX_VALUE)])
        db.flush()
    with concordkv_mp.open(path, **options) as db:
        assert db.get(b"k" * MAX_KEY) == b"v" * MAX_VALUE
        assert db.get("é" * (MAX_KEY // 2)) == ("ü" * (MAX_VALUE // 2)).encode()
        assert db.get(b"m" * MAX_KEY) == b"w" * MAX_VALUE
        assert db.count() == 3


OVERSIZED_KEYS = [b"k" * (MAX_KEY + 1), "é" * (MAX_KEY // 2) + "x", bytearray(MAX_KEY + 1)]
OVERSIZED_KEY_IDS = ["bytes", "str-utf8-bytes", "bytearray"]
WRITE_KEY_CALLS = {
    "set": lambda db, k: db.set(k, b"v"),
    "update": lambda db, k: db.update(k, b"v"),
    "mset": lambda db, k: db.mset([(b"ok", b"new"), (k, b"v")]),
}


@pytest.mark.parametrize("call", WRITE_KEY_CALLS.values(), ids=WRITE_KEY_CALLS.keys())
@pytest.mark.parametrize("key", OVERSIZED_KEYS, ids=OVERSIZED_KEY_IDS)
def test_key_over_limit(sized_db, call, key):
    sized_db.set(b"ok", b"before")
    error = expect(KeyTooLargeError, lambda: call(sized_db, key))
    assert isinstance(error, ValueError)
    assert sized_db.get(b"ok") == b"before"
    assert sized_db.count() == 1
    still_works(sized_db)


OVERSIZED_VALUES = [b"v" * (MAX_VALUE + 1), "ü" * (MAX_VALUE // 2) + "x", memoryview(bytes(MAX_VALUE + 1))]
WRITE_VALUE_CALLS = {
    "set": lambda db, v: db.set(b"k", v),
    "update": lambda db, v: db.update(b"k", v),
    "mset": lambda db, v: db.mset([(b"ok", b"new"), (b"k", v)]),
}


@pytest.mark.parametrize("call", WRITE_VALUE_CALLS.values(), ids=WRITE_VALUE_CALLS.keys())
@pytest.mark.parametrize("value", OVERSIZED_VALUES, ids=OVERSIZED_KEY_IDS)
def test_value_over_limit(sized_db, call, value):
    sized_db.mset([(b"ok", b"before"), (b"k", b"before")])
    expect(ValueTooLargeError, lambda: call(sized_db, value))
    assert sized_db.mget([b"ok", b"k"]) == [b"before", b"before"]
    still_works(sized_db)


# -- options ------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("memtable_sz", 4096),  # unknown name
    ("engine", "btree-typo"),
    ("fsync", "sometimes"),
    ("fsync", None),
    ("compression", "zstd"),
    ("wal_recovery", "lenient"),
    ("memtable_size", 1024),  # below 4 KiB
    ("memtable_size", "4096"),
    ("memtable_size", 4096.0),
    ("memtable_size", True),
    ("max_key_size", 0),
    ("max_value_size", -1),
    ("block_size", 100),
    ("cache_size", -1),
    ("target_file_size", 0),
    ("level_base_size", 1),
    ("l0_compaction_trigger", 0),
]


@pytest.mark.parametrize("name, value", BAD_OPTIONS, ids=[f"{n}={v!r}" for n, v in BAD_OPTIONS])
def test_bad_option_names_the_field(tmp_path, name, value):
    path = str(tmp_path / "db")
    error = expect(ConfigError, lambda: concordkv_mp.open(path, **{name: value}))
    assert error.field == name
    assert name in str(error)
    # A refused open leaves nothing locked: the same directory opens with good options.
    with concordkv_mp.open(path, fsync="none") as db:
        still_works(db)


def test_inconsistent_options_name_a_field(tmp_path):
    error = expect(
        ConfigError,
        lambda: concordkv_mp.open(str(tmp_path / "db"), l0_compaction_trigger=8, l0_stop_writes_trigger=4),
    )
    assert error.field in ("l0_stop_writes_trigger", "l0_compaction_trigger")


# -- lifecycle ----------------------------------------------------------------------------

AFTER_CLOSE_CALLS = {
    "get": lambda db: db.get(b"k"),
    "set": lambda db: db.set(b"k", b"v"),
    "delete": lambda db: db.delete(b"k"),
    "exists": lambda db: db.exists(b"k"),
    "update": lambda db: db.update(b"k", b"v"),
    "mget": lambda db: db.mget([b"k"]),
    "mset": lambda db: db.mset([(b"k", b"v")]),
    "mdelete": lambda db: db.mdelete([b"k"]),
    "scan": lambda db: list(db.scan()),
    "count": lambda db: db.count(),
    "flush": lambda db: db.flush(),
    "compact": lambda db: db.compact(),
}


@pytest.mark.parametrize("call", AFTER_CLOSE_CALLS.values(), ids=AFTER_CLOSE_CALLS.keys())
def test_use_after_close(tmp_path, call):
    path = str(tmp_path / "db")
    db = concordkv_mp.open(path, fsync="none")
    db.set(b"k", b"kept")
    db.close()
    expect(ClosedError, lambda: call(db))
    # Nothing was written by the refused call, and the data is intact for the next handle.
    with concordkv_mp.open(path, fsync="none") as again:
        assert again.get(b"k") == b"kept"
        assert again.count() == 1


def test_context_manager_closes(tmp_path):
    with concordkv_mp.open(str(tmp_path / "db"), fsync="none") as db:
        db.set(b"k", b"v")
    expect(ClosedError, lambda: db.get(b"k"))


def test_open_iterator_after_close(db):
    db.mset([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    iterator = db.scan()
    assert next(iterator) == (b"a", b"1")
    db.close()
    expect(ClosedError, lambda: next(iterator))


def test_second_open_is_refused_and_first_handle_keeps_working(tmp_path):
    path = str(tmp_path / "db")
    first = concordkv_mp.open(path, fsync="none")
    try:
        first.set(b"k", b"1")
        expect(DatabaseLockedError, lambda: concordkv_mp.open(path, fsync="none"))
        # Different options do not get around the lock either.
        expect(DatabaseLockedError, lambda: concordkv_mp.open(path, fsync="always", memtable_size=4096))
        assert first.get(b"k") == b"1"
        first.set(b"k", b"2")
        first.flush()
        assert first.get(b"k") == b"2"
    finally:
        first.close()
    with concordkv_mp.open(path, fsync="none") as second:
        assert second.get(b"k") == b"2"
