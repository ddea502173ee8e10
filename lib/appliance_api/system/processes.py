"""Processes to signal, wait for and stop, through psutil. Whether a daemon
runs at all is system/liveness.py's rule, which this module only wraps.
"""
import os
import signal
import time

import psutil

from . import liveness


def live_process(pid_file, names, config_path, reloading_marker=None):
    """The daemon's psutil.Process if it runs (liveness.daemon_pid), else None.
    names: as /proc/<pid>/stat spells them (layout.PROCESS_NAMES)."""
    pid = liveness.daemon_pid(pid_file, names, os.path.abspath(config_path), reloading_marker)
    if pid is None:
        return None
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def read_pid(pid_file):
    """The pid in pid_file (a program's own, not a daemon of ours), or None."""
    pid = liveness.read_pid_file(pid_file)
    return pid if isinstance(pid, int) else None


def find_by_config(names, config_path):
    """The daemon (the topmost of its process tree) named names and running
    config_path, found by its command line, when its pid file cannot say:
    a stop must not leave it running as an orphan. None if there is none."""
    names, found = [os.fsdecode(name) for name in names], {}
    for process in psutil.process_iter(["name", "cmdline", "status", "ppid"]):
        info = process.info
        if info["status"] != psutil.STATUS_ZOMBIE and info["name"] in names \
                and config_path in (info["cmdline"] or []):
            found[process.pid] = process
    for process in found.values():
        if process.info["ppid"] not in found:
            return process
    return None


def machine_started():
    """When this machine's PID 1 started (epoch seconds): the boot, or a
    container's boot, whose /proc/stat btime is its host's."""
    try:
        return psutil.Process(1).create_time()
    except psutil.Error:
        return psutil.boot_time()


def wait_gone(process, timeout):
    """Wait until process has exited (or is a zombie nobody reaps); True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(process):
            return True
        time.sleep(0.02)
    return not is_alive(process)


def is_alive(process):
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def children(process):
    """Live child pids (haproxy's master-worker: the workers)."""
    try:
        return {c.pid for c in process.children() if is_alive(c)}
    except psutil.Error:
        return set()


def send_signal(process, signum):
    try:
        process.send_signal(signum)
        return True
    except psutil.Error:
        return False


def stop(process, soft_signal, timeout):
    """Soft stop, then SIGKILL after timeout, so a stop never hangs; True if it was running."""
    if not send_signal(process, soft_signal):
        return False
    if not wait_gone(process, timeout):
        for child in _children_recursive(process):
            send_signal(child, signal.SIGKILL)
        send_signal(process, signal.SIGKILL)
        wait_gone(process, 2)
    return True


def _children_recursive(process):
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def pid_alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def catches_signal(process, signum):
    """True once process has a handler for signum (SigCgt in /proc/<pid>/status)."""
    try:
        with open("/proc/%d/status" % process.pid) as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return False


def process_of(pid):
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None
