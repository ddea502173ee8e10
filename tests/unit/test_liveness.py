"""system/liveness.py: the one rule for "is this daemon running", shared by
the read endpoints (health.py) and every change (system/daemon.py)."""
import os
import subprocess
import time

from appliance_api.system import liveness


def test_a_live_daemon_on_its_own_config_is_running(tmp_path, fake_daemons):
    config, pid_file = str(tmp_path / "haproxy.rendered.cfg"), str(tmp_path / "haproxy.pid")
    daemon = fake_daemons("haproxy", config, pid_file)
    assert liveness.daemon_pid(pid_file, (b"haproxy",), config) == daemon.pid


def test_another_program_or_another_config_behind_the_pid_is_not(tmp_path, fake_daemons):
    config, pid_file = str(tmp_path / "haproxy.rendered.cfg"), str(tmp_path / "haproxy.pid")
    fake_daemons("haproxy", config, pid_file)
    assert liveness.daemon_pid(pid_file, (b"stunnel4",), config) is None
    assert liveness.daemon_pid(pid_file, (b"haproxy",), str(tmp_path / "other.cfg")) is None


def test_a_zombie_is_not_running(tmp_path):
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while liveness.is_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # exited, not reaped: a zombie
    assert not liveness.is_alive(child.pid)
    assert liveness.check_process(child.pid, (b"true",), "/nowhere") is None
    child.wait()


def test_a_missing_pid_file_is_settling_only_beside_the_reloading_marker(tmp_path):
    pid_file, marker = str(tmp_path / "haproxy.pid"), str(tmp_path / "master.sock")
    assert liveness.read_pid_file(pid_file, reloading_marker=marker) is None
    open(marker, "w").close()
    assert liveness.read_pid_file(pid_file, reloading_marker=marker) is liveness.SETTLING
    started = time.monotonic()
    assert liveness.daemon_pid(pid_file, (b"haproxy",), "/x", marker, settle=0.1) is None
    assert time.monotonic() - started >= 0.1  # it waited for a rewrite that never came


def test_garbage_and_fifos_in_the_pid_file_are_no_daemon(tmp_path):
    pid_file = str(tmp_path / "haproxy.pid")
    with open(pid_file, "w") as file:
        file.write("not a pid\n")
    assert liveness.read_pid_file(pid_file) is None
    os.unlink(pid_file)
    os.mkfifo(pid_file)
    assert liveness.read_pid_file(pid_file) is None  # and it did not hang
