"""The LSM engine's background executor: without a factory both steps run in the
engine's own threads (no child process, whatever compaction_workers says); with one,
every flush and compaction goes to the executors it made, from the matching thread."""

from __future__ import annotations

import threading

import psutil

from concordkv_mp.engines.lsm.engine import LSMEngine
from concordkv_mp.engines.lsm.executor import InProcessExecutor
from concordkv_mp.io.fs import DEFAULT_FS
from concordkv_mp.options import StorageOptions
from tests.support.engine_options import TINY_LSM_OPTIONS

# compaction_workers=1 shows that the engine leaves that choice to its caller. Levels
# >= 1 are large enough that nothing is left to compact once compact() returns, so
# the jobs seen can be compared with the engine's counters.
OPTIONS = StorageOptions(**dict(TINY_LSM_OPTIONS, fsync="none", compaction_workers=1, level_base_size=1 << 20))


def fill(engine: LSMEngine, rounds: int = 4) -> dict:
    """Writes that flush several MemTables and push compactions below L0."""
    model = {}
    for round_ in range(rounds):
        pairs = [(b"key%05d" % ((i * 7 + round_) % 600), b"round %d %d" % (round_, i)) for i in range(400)]
        for start in range(0, len(pairs), 20):
            engine.write(pairs[start : start + 20])
        model.update(pairs)
    engine.compact()
    return model


class RecordingExecutor:
    """The in-process executor, noting each job and the thread that handed it over."""

    def __init__(self, fs, jobs: list, worker_stats=None):
        self._inner = InProcessExecutor(fs)
        self._jobs = jobs
        self._worker_stats = worker_stats
        self.fs = fs
        self.stopped = False

    def flush(self, directory, number, memtable, options):
        self._jobs.append(("flush", threading.current_thread().name, memtable.frozen))
        return self._inner.flush(directory, number, memtable, options)

    def compact(self, directory, task, options):
        self._jobs.append(("compact", threading.current_thread().name))
        return self._inner.compact(directory, task, options)

    def worker_stats(self):
        return self._worker_stats

    def stop(self):
        self.stopped = True


def test_without_a_factory_the_steps_run_in_the_engine_threads(tmp_path):
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    engine = LSMEngine(str(tmp_path), OPTIONS)
    try:
        model = fill(engine)
        stats = engine.stats()
        assert {child.pid for child in psutil.Process().children(recursive=True)} <= before
        assert stats["flushes"] >= 4 and stats["compactions"] >= 1
        assert stats["workers"] == {}
        assert dict(engine.scan(None, None, False)) == model
    finally:
        engine.close()


def test_an_injected_executor_receives_every_flush_and_compaction(tmp_path):
    jobs, executors = [], []

    def factory(fs):
        executors.append(RecordingExecutor(fs, jobs))
        return executors[-1]

    engine = LSMEngine(str(tmp_path), OPTIONS, DEFAULT_FS, factory)
    try:
        model = fill(engine)
        stats = engine.stats()
    finally:
        engine.close()
    assert len(executors) == 2 and all(executor.fs is DEFAULT_FS for executor in executors)
    assert all(executor.stopped for executor in executors)
    flushes = [job for job in jobs if job[0] == "flush"]
    compactions = [job for job in jobs if job[0] == "compact"]
    assert len(flushes) == stats["flushes"] >= 4
    assert len(compactions) == stats["compactions"] >= 1
    assert set(flushes) == {("flush", "ckv-lsm-flush", True)}  # frozen MemTables only
    assert set(compactions) == {("compact", "ckv-lsm-compaction")}
    assert stats["workers"] == {}
    reopened = LSMEngine(str(tmp_path), OPTIONS)
    try:
        assert dict(reopened.scan(None, None, False)) == model
    finally:
        reopened.close()


def test_stats_list_the_executors_that_report_a_worker(tmp_path):
    worker = {"pid": 4242, "tasks": 0, "restarts": 0}
    roles = iter([worker, None])
    engine = LSMEngine(str(tmp_path), OPTIONS, DEFAULT_FS, lambda fs: RecordingExecutor(fs, [], next(roles)))
    try:
        assert engine.stats()["workers"] == {"flush": worker}
    finally:
        engine.close()
