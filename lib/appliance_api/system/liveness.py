"""Is a daemon running? The one rule, standard library only: the pid in its
pid file names a live process (not a zombie) with the daemon's name whose
command line holds the daemon's own config file. Everything asks this rule:
the read endpoints, octctl status, keepalived's track script (every second),
the supervisor, and every change before it starts, reloads or stops a daemon
(system/daemon.py wraps the pid in a psutil.Process only to signal it).

A pid file is stale when its process is gone, is a zombie, or is some other
program that inherited the pid.
"""
import os
import time

# haproxy's master empties its pid file and re-executes itself on every
# reload: for a few milliseconds the file or /proc/<pid>/cmdline reads empty.
SETTLE = 0.5
# O_NONBLOCK: a FIFO put where the pid file belongs must not hang us.
PID_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class _Settling:
    def __repr__(self):
        return "SETTLING"


SETTLING = _Settling()  # a reload is rewriting the pid file or re-executing: look again


def daemon_pid(pid_file, names, config_path, reloading_marker=None, settle=SETTLE):
    """The pid of the daemon named names (bytes, as /proc/<pid>/stat spells
    them) running config_path, per pid_file; None when it does not run.
    reloading_marker: a file whose presence means a missing pid file may be
    a reload rewriting it (haproxy's master socket)."""
    deadline = None
    while True:
        verdict = read_pid_file(pid_file, reloading_marker=reloading_marker)
        if isinstance(verdict, int):
            verdict = check_process(verdict, names, config_path)
        if verdict is not SETTLING:
            return verdict
        if deadline is None:
            deadline = time.monotonic() + settle
        elif time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def read_pid_file(pid_file, dir_fd=None, reloading_marker=None):
    """The pid in pid_file, None (no daemon), or SETTLING. Bare os calls:
    /status asks this for every daemon of the appliance. Paths are relative
    to dir_fd if given."""
    try:
        fd = os.open(pid_file, PID_FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if reloading_marker and os.access(reloading_marker, os.F_OK, dir_fd=dir_fd):
            return SETTLING
        return None
    except OSError:
        return None
    try:
        words = os.read(fd, 64).split()
        if not words:
            info = os.fstat(fd)
            if info.st_mode & 0o170000 != 0o100000:
                return None  # a FIFO, a device: no pid file of ours
            return SETTLING if time.time() - info.st_mtime < 2 else None
        pid = int(words[0])
        return pid if pid > 0 else None
    except (OSError, ValueError):
        return None  # a directory, garbage
    finally:
        os.close(fd)


def check_process(pid, names, config_path):
    """pid if it is a live process named one of names running config_path
    (an absolute path), else None; SETTLING mid-execve."""
    try:
        stat = _read("/proc/%d/stat" % pid)
    except OSError:
        return None
    head, _, tail = stat.rpartition(b")")
    if tail.split()[:1] in ([b"Z"], [b"X"]):
        return None
    if head.partition(b"(")[2] not in names:
        return None
    try:
        arguments = _read("/proc/%d/cmdline" % pid).split(b"\0")
    except OSError:
        return None
    if arguments == [b""]:
        return SETTLING  # between haproxy's execve and its new command line
    return pid if os.fsencode(config_path) in arguments else None


def is_alive(pid):
    """Whether pid is a process that has not exited (a zombie has)."""
    try:
        stat = _read("/proc/%d/stat" % pid)
    except OSError:
        return False
    return stat.rpartition(b")")[2].split()[:1] not in ([b"Z"], [b"X"])


def live_pids():
    """The pids of every process now (one listing of /proc)."""
    return {int(name) for name in os.listdir("/proc") if name.isdigit()}


def _read(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)
