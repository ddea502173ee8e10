"""Is a daemon running? Read its pid file and check the process behind it.

A pid file is stale when its process is gone, is a zombie, or is some other
program that inherited the pid: the name and the command line must show the
daemon run on that instance's own config file.
"""
import os
import signal
import stat
import time

import psutil


def read_pid(pid_file, settle=0.5):
    """The pid in pid_file, or None. haproxy's master rewrites its pid file on
    every reload (empty, then the pid): a freshly emptied file is read again a
    while; an old empty one (a daemon that died mid-write) is simply stale."""
    deadline = time.monotonic() + settle
    while True:
        try:
            # O_NONBLOCK: a FIFO put where the pid file belongs must not hang us.
            fd = os.open(pid_file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as file:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_size > 64:
                    return None  # a socket, a FIFO, a device, a big file: no pid file of ours
                text = file.read().decode("ascii")
                fresh = time.time() - info.st_mtime < 2
        except (OSError, UnicodeDecodeError):
            # Missing, unreadable, a socket (ENXIO), a directory: not running.
            return None
        if text.strip() or not fresh or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def live_process(pid_file, names, config_path):
    """The psutil.Process named by pid_file if it is the expected daemon, else None."""
    pid = read_pid(pid_file)
    if pid is None or pid <= 0:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or process.name() not in names:
            return None
        return process if config_path in _settled_cmdline(process) else None
    except psutil.Error:
        return None


def find_by_config(names, config_path):
    """The daemon (the topmost of its process tree) named names and running
    config_path, found by its command line, when its pid file cannot say:
    a stop must not leave it running as an orphan. None if there is none."""
    found = {}
    for process in psutil.process_iter(["name", "cmdline", "status", "ppid"]):
        info = process.info
        if info["status"] != psutil.STATUS_ZOMBIE and info["name"] in names \
                and config_path in (info["cmdline"] or []):
            found[process.pid] = process
    for process in found.values():
        if process.info["ppid"] not in found:
            return process
    return None


def _settled_cmdline(process, timeout=0.5):
    """The command line, waiting out an execve: haproxy's master re-executes
    itself after every reload, and meanwhile /proc/<pid>/cmdline reads empty."""
    deadline = time.monotonic() + timeout
    cmdline = process.cmdline()
    while not cmdline and time.monotonic() < deadline:
        time.sleep(0.005)
        cmdline = process.cmdline()
    return cmdline


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
