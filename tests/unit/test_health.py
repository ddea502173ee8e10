"""health.running_pid: a daemon's liveness from its pid file and /proc only."""
import os
import time

from test_read_endpoints import A, make_instance


def test_a_live_daemon_on_its_own_config(state_dir, fake_daemons):
    from appliance_api.health import running_pid

    instance = make_instance(state_dir, A, "haproxy.cfg", "stunnel.conf")
    haproxy = fake_daemons("haproxy", instance.rendered("haproxy"), instance.pid_file("haproxy"))
    assert running_pid(instance, "haproxy") == haproxy.pid
    # A stunnel's pid file naming that haproxy: wrong name, not stunnel.
    with open(instance.pid_file("stunnel"), "w") as file:
        file.write("%d\n" % haproxy.pid)
    assert running_pid(instance, "stunnel") is None
    # Another instance's config on the command line: not this instance's daemon.
    other = make_instance(state_dir, "635bbdc6-65cd-41fc-b879-22c02aaf8952", "haproxy.cfg")
    os.replace(instance.pid_file("haproxy"), other.pid_file("haproxy"))
    assert running_pid(other, "haproxy") is None


def test_odd_pid_files_mean_not_running_at_once(state_dir, fake_daemons):
    from appliance_api.health import running_pid

    instance = make_instance(state_dir, A, "haproxy.cfg")
    haproxy = fake_daemons("haproxy", instance.rendered("haproxy"),
                           os.path.join(state_dir, "elsewhere.pid"))
    pid_file = instance.pid_file("haproxy")
    os.symlink(os.path.join(state_dir, "elsewhere.pid"), pid_file)  # O_NOFOLLOW
    assert running_pid(instance, "haproxy") is None
    os.unlink(pid_file)
    os.mkfifo(pid_file)  # must not hang
    started = time.monotonic()
    assert running_pid(instance, "haproxy") is None
    os.unlink(pid_file)
    with open(pid_file, "w") as file:
        file.write("garbage\n")
    assert running_pid(instance, "haproxy") is None
    with open(pid_file, "w") as file:
        file.write("%d\n" % haproxy.pid)
    assert running_pid(instance, "haproxy") == haproxy.pid
    assert time.monotonic() - started < 0.3


def test_a_pid_file_being_rewritten_by_a_reload_is_waited_for(state_dir, fake_daemons):
    """haproxy's master unlinks its pid file, then writes it again: a missing
    file beside master.sock is read again until it is back (or 0.5 s)."""
    from appliance_api.health import running_pid

    instance = make_instance(state_dir, A, "haproxy.cfg")
    pid_file = instance.pid_file("haproxy")
    haproxy = fake_daemons("haproxy", instance.rendered("haproxy"), pid_file)
    os.unlink(pid_file)
    # Without a master socket, a missing pid file is simply "not running".
    started = time.monotonic()
    assert running_pid(instance, "haproxy") is None
    assert time.monotonic() - started < 0.1
    open(instance.master_socket, "w").close()

    write_back_soon(pid_file, haproxy.pid)
    assert running_pid(instance, "haproxy") == haproxy.pid
    os.unlink(pid_file)
    started = time.monotonic()
    assert running_pid(instance, "haproxy") is None  # never written back
    assert 0.45 < time.monotonic() - started < 1.5


def test_the_bulk_read_lists_proc_after_reading_every_pid_file(state_dir, fake_daemons,
                                                               monkeypatch):
    """/status and /service_status list /proc once; listed after the pid files
    are read, the listing cannot miss a daemon they name (one started
    mid-request included)."""
    from appliance_api import health

    running = make_instance(state_dir, A, "haproxy.cfg", "stunnel.conf")
    haproxy = fake_daemons("haproxy", running.rendered("haproxy"), running.pid_file("haproxy"))
    gone = make_instance(state_dir, "635bbdc6-65cd-41fc-b879-22c02aaf8952", "haproxy.cfg")
    with open(gone.pid_file("haproxy"), "w") as file:
        file.write("4194999\n")  # above any pid_max: surely no process
    read, listed_after = [], []
    pid_file = health._pid_file
    monkeypatch.setattr(health, "_pid_file", lambda *a: read.append(a) or pid_file(*a))
    live_pids = health.live_pids
    monkeypatch.setattr(health, "live_pids", lambda: listed_after.append(len(read)) or live_pids())
    assert health.daemon_table(state_dir) == [
        (A, [("haproxy", haproxy.pid), ("stunnel", None)], "DEGRADED"),
        (gone.id, [("haproxy", None)], "DOWN")]
    assert listed_after == [3]  # all three pid files read before /proc was listed


def test_the_bulk_read_waits_for_a_pid_file_a_reload_rewrites(state_dir, fake_daemons):
    """daemon_table reads pid files relative to the instances folder: the
    master socket beside a missing one is found there too, and waited for."""
    from appliance_api.health import daemon_table

    instance = make_instance(state_dir, A, "haproxy.cfg")
    pid_file = instance.pid_file("haproxy")
    haproxy = fake_daemons("haproxy", instance.rendered("haproxy"), pid_file)
    os.unlink(pid_file)
    open(instance.master_socket, "w").close()

    write_back_soon(pid_file, haproxy.pid)
    assert daemon_table(state_dir) == [(A, [("haproxy", haproxy.pid)], "OK")]


def write_back_soon(pid_file, pid):
    """Write the pid file 0.1 s from now, as haproxy's master does after a reload."""
    import threading

    def write_back():
        time.sleep(0.1)
        with open(pid_file, "w") as file:
            file.write("%d\n" % pid)

    threading.Thread(target=write_back).start()
