"""Is a daemon running? Standard library only: the read endpoints, octctl
status and keepalived's track script (every second) ask, so a check reads
just the pid file and /proc/<pid>/stat and cmdline, never psutil.

A pid file is stale when its process is gone, is a zombie, or is some other
program that inherited the pid: the name and the command line must show the
daemon run on that instance's own rendered config.
"""
import os
import time

from .layout import RENDERED_NAMES, existing_instances

PROCESS_NAMES = {"haproxy": (b"haproxy",), "stunnel": (b"stunnel4", b"stunnel")}
# haproxy's master empties its pid file and re-executes itself on every
# reload: for a few milliseconds the file or /proc/<pid>/cmdline reads empty.
SETTLE = 0.5


def running_pid(instance, service, settle=SETTLE):
    """The pid of the instance's service if it runs, else None."""
    config_path = os.fsencode(os.path.abspath(instance.rendered(service)))
    names = PROCESS_NAMES[service]
    # haproxy's master unlinks its pid file and writes it anew on a reload: a
    # missing one beside its master socket may be that moment.
    rewritten = instance.master_socket if service == "haproxy" else None
    deadline = None
    while True:
        verdict = _look(instance.pid_file(service), names, config_path, rewritten)
        if verdict is not _SETTLING:
            return verdict
        if deadline is None:
            deadline = time.monotonic() + settle
        elif time.monotonic() > deadline:
            return None
        time.sleep(0.005)


_SETTLING = object()


def _look(pid_file, names, config_path, rewritten_beside=None):
    """A pid, None (not running) or _SETTLING (a reload is rewriting it: look again)."""
    try:
        # O_NONBLOCK: a FIFO put where the pid file belongs must not hang us.
        fd = os.open(pid_file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if rewritten_beside and os.path.exists(rewritten_beside):
            return _SETTLING
        return None
    except OSError:
        return None
    with open(fd, "rb") as file:
        info = os.fstat(fd)
        if not (info.st_mode & 0o170000 == 0o100000) or info.st_size > 64:
            return None  # a socket, a FIFO, a device, a big file: no pid file of ours
        words = file.read().split()
    if not words:
        return _SETTLING if time.time() - info.st_mtime < 2 else None
    try:
        pid = int(words[0])
        with open("/proc/%d/stat" % pid, "rb") as stat:
            head, _, tail = stat.read().rpartition(b")")
        with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
            arguments = cmdline.read().split(b"\0")
    except (OSError, ValueError):
        return None
    if pid <= 0 or tail.split()[:1] in ([b"Z"], [b"X"]):
        return None
    if head.partition(b"(")[2] not in names:
        return None
    if arguments == [b""]:
        return _SETTLING  # between haproxy's execve and its new command line
    return pid if config_path in arguments else None


def daemon_running(instance, service):
    return running_pid(instance, service) is not None


def changing(instance):
    """Whether a change holds the instance's lock now: a first start, a reload
    or a DELETE in flight, when a daemon may be down for a moment by design."""
    from .system.locks import held

    return held(instance.lock_path)


def service_states(instance):
    """[(service, pid or None)] for each configured service, and the instance's
    state as /service_status words it: OK, DEGRADED or DOWN."""
    states = [(service, running_pid(instance, service))
              for service in instance.configured_services()]
    running = sum(pid is not None for _service, pid in states)
    state = "OK" if running == len(states) else "DOWN" if running == 0 else "DEGRADED"
    return states, state


def service_status_lines(state_dir):
    """/service_status in the original's layout."""
    lines = []
    for instance in existing_instances(state_dir, snapshot=True):
        lines += service_status_block(instance.id, *service_states(instance))
    return lines


def service_status_block(instance_id, states, state):
    """One instance's lines of /service_status (also what `octctl status` prints)."""
    return ["%-52s%s" % (instance_id, state)] + [
        "  %-17s%s" % (service, "running (pid %d)" % pid if pid else "stopped")
        for service, pid in states]


def problems(state_dir):
    """One line per configured daemon that does not run (instances in the
    middle of a change aside: a health check must not move every tenant's
    addresses because one tenant's haproxy is reloading)."""
    found = []
    for instance in existing_instances(state_dir, snapshot=True):
        if changing(instance):
            continue
        for service in instance.configured_services():
            if service in RENDERED_NAMES and not daemon_running(instance, service):
                found.append("%s: %s is not running" % (instance.id, service))
    return found
