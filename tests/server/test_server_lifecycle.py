"""Starting and stopping the server: a clean shutdown within 10 s leaves no process, no
shared-memory segment, no socket file and no pid file, and keeps every write; the daemon
mode and `concordkv stop`; a config the data directory cannot take is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from concordkv_mp.server.supervisor import run_directory


def test_clean_shutdown_leaves_nothing_and_keeps_data(server_factory):
    server = server_factory(partitions=2, fsync="everysec")
    server.start()
    children = server.descendants()
    assert len(children) >= 5  # front, 2 partitions, I/O optimizer, a compaction worker
    with server.client() as client:
        client.mset({b"k%05d" % i: b"v%d" % i for i in range(5000)})
    assert os.listdir(server.run_dir)  # rings and sockets while it runs
    elapsed = server.stop()
    assert elapsed < 10.0
    gone, alive = psutil.wait_procs(children, timeout=1)
    assert not alive, alive
    assert not os.path.exists(run_directory(server.data_dir))
    assert not os.path.exists(os.path.join(server.data_dir, "concordkv.pid"))
    server.start()
    with server.client() as client:
        assert client.count() == 5000
        assert client.get(b"k04999") == b"v4999"


def test_sigint_shuts_down_like_sigterm(server_factory):
    server = server_factory(partitions=1)
    server.start()
    children = server.descendants()
    server.process.send_signal(2)
    assert server.process.wait(12) == 0
    assert not psutil.wait_procs(children, timeout=1)[1]
    assert not os.path.exists(server.run_dir)


def test_daemon_and_stop(server_factory):
    server = server_factory(partitions=1)
    command = [sys.executable, "-m", "concordkv_mp.cli.main"]
    started = subprocess.run([*command, "serve", "-d", "-c", server.config_path], capture_output=True, text=True,
                             timeout=60)
    assert started.returncode == 0, started.stderr
    pid_file = os.path.join(server.data_dir, "concordkv.pid")
    pid = int(open(pid_file).read())
    daemon = psutil.Process(pid)
    assert daemon.ppid() == 1 or daemon.ppid() != os.getpid()  # detached
    with server.client() as client:
        client.set(b"a", b"1")
    children = daemon.children(recursive=True)
    stopped = subprocess.run([*command, "stop", "-c", server.config_path], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not psutil.wait_procs(children, timeout=2)[1]
    assert not os.path.exists(pid_file)
    assert not os.path.exists(server.run_dir)
    again = subprocess.run([*command, "stop", "-c", server.config_path], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1


def test_second_server_on_the_same_data_directory_is_refused(server, server_factory):
    command = [sys.executable, "-m", "concordkv_mp.cli.main", "serve", "-c", server.config_path,
               "--endpoint", "tcp://127.0.0.1:1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "LOCKED" in result.stderr or "already" in result.stderr
    with server.client() as client:
        assert client.ping() == "pong"


def test_changing_the_partition_count_is_refused_naming_the_field(server_factory):
    server = server_factory(partitions=2)
    server.start()
    server.stop()
    command = [sys.executable, "-m", "concordkv_mp.cli.main", "serve", "-c", server.config_path, "--partitions", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "partitions" in result.stderr and "resharding" in result.stderr
