"""Is a daemon running? Standard library only: the read endpoints, octctl
status and keepalived's track script (every second) ask, so a check reads
just the pid file and /proc/<pid>/stat and cmdline, never psutil.

A pid file is stale when its process is gone, is a zombie, or is some other
program that inherited the pid: the name and the command line must show the
daemon run on that instance's own rendered config.
"""
import os
import time

from .layout import (MASTER_SOCKET_NAME, RENDERED_NAMES, existing_instances, instances_dir,
                     open_instances_dir, scan_instances)

PROCESS_NAMES = {"haproxy": (b"haproxy",), "stunnel": (b"stunnel4", b"stunnel")}
# haproxy's master empties its pid file and re-executes itself on every
# reload: for a few milliseconds the file or /proc/<pid>/cmdline reads empty.
SETTLE = 0.5
# O_NONBLOCK: a FIFO put where the pid file belongs must not hang us.
# /service_status's layout (the original's): the id padded to column 52, then
# the state; under it each service, indented 2, padded to 17, then its state.
INSTANCE_LINE = "%-52s%s"
SERVICE_LINE = "  %-17s%s"
PID_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def running_pid(instance, service, settle=SETTLE):
    """The pid of the instance's service if it runs, else None."""
    return _running(instance.dir + "/", service, settle)


def _running(folder, service, settle=SETTLE):
    deadline = None
    while True:
        verdict = _pid_file(folder, service)
        if isinstance(verdict, int):
            verdict = _process(folder, service, verdict)
        if verdict is not _SETTLING:
            return verdict
        if deadline is None:
            deadline = time.monotonic() + settle
        elif time.monotonic() > deadline:
            return None
        time.sleep(0.005)


_SETTLING = object()


def _pid_file(folder, service, dir_fd=None):
    """The pid in the service's pid file, None (no daemon), or _SETTLING (a
    reload is rewriting it: look again). Bare os calls: /status asks this
    for every daemon of the appliance. folder is relative to dir_fd if given."""
    try:
        fd = os.open(folder + service + ".pid", PID_FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        # haproxy's master unlinks its pid file and writes it anew on a
        # reload: a missing one beside its master socket may be that moment.
        if service == "haproxy" and os.access(folder + MASTER_SOCKET_NAME, os.F_OK,
                                              dir_fd=dir_fd):
            return _SETTLING
        return None
    except OSError:
        return None
    try:
        words = os.read(fd, 64).split()
        if not words:
            info = os.fstat(fd)
            if info.st_mode & 0o170000 != 0o100000:
                return None  # a FIFO, a device: no pid file of ours
            return _SETTLING if time.time() - info.st_mtime < 2 else None
        pid = int(words[0])
        return pid if pid > 0 else None
    except (OSError, ValueError):
        return None  # a directory, garbage
    finally:
        os.close(fd)


def _process(folder, service, pid):
    """pid if it is the service's daemon on this instance's rendered config
    (not a zombie, the daemon's name), else None; _SETTLING mid-execve."""
    try:
        stat = _read("/proc/%d/stat" % pid)
    except OSError:
        return None
    head, _, tail = stat.rpartition(b")")
    if tail.split()[:1] in ([b"Z"], [b"X"]):
        return None
    if head.partition(b"(")[2] not in PROCESS_NAMES[service]:
        return None
    try:
        arguments = _read("/proc/%d/cmdline" % pid).split(b"\0")
    except OSError:
        return None
    if arguments == [b""]:
        return _SETTLING  # between haproxy's execve and its new command line
    config_path = os.fsencode(os.path.abspath(folder + RENDERED_NAMES[service]))
    return pid if config_path in arguments else None


def _read(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def daemon_running(instance, service):
    return running_pid(instance, service) is not None


def changing(instance):
    """Whether a change holds the instance's lock now: a first start, a reload
    or a DELETE in flight, when a daemon may be down for a moment by design."""
    from .system.locks import held

    return held(instance.lock_path)


def live_pids():
    """The pids of every process now (one listing of /proc)."""
    return {int(name) for name in os.listdir("/proc") if name.isdigit()}


def service_states(instance):
    """[(service, pid or None)] for each configured service, and the instance's
    state as /service_status words it: OK, DEGRADED or DOWN."""
    folder = instance.dir + "/"
    states = [(service, _running(folder, service))
              for service in instance.configured_services()]
    return states, _state_word(states)


def daemon_table(state_dir):
    """[(instance id, [(service, pid or None)], state word)] of every
    instance, sorted: the one pass /service_status and /status make.

    Every pid file is read first, then /proc is listed once: a pid it does
    not list is gone (and costs no further read). Listed after the pid files
    were read, it cannot miss a daemon they name."""
    dir_fd = open_instances_dir(state_dir)
    if dir_fd is None:
        return []
    try:
        found = scan_instances(state_dir, dir_fd)
        pids = [[(service, _pid_file(folder, service, dir_fd)) for service in configured]
                for _name, folder, configured in found]
    finally:
        os.close(dir_fd)
    live = live_pids() if found else set()
    base = instances_dir(state_dir) + "/"
    table = []
    for (name, folder, _configured), services in zip(found, pids):
        states = []
        for service, pid in services:
            if pid is _SETTLING:
                pid = _running(base + folder, service)
            elif pid is not None:
                pid = _process(base + folder, service, pid) if pid in live else None
                if pid is _SETTLING:
                    pid = _running(base + folder, service)
            states.append((service, pid))
        table.append((name, states, _state_word(states)))
    return table


def _state_word(states):
    running = sum(pid is not None for _service, pid in states)
    return "OK" if running == len(states) else "DOWN" if running == 0 else "DEGRADED"


def service_status_lines(state_dir):
    """/service_status in the original's layout."""
    lines = []
    for name, states, state in daemon_table(state_dir):
        lines.append(INSTANCE_LINE % (name, state))
        for service, pid in states:
            lines.append(SERVICE_LINE % (service, "running (pid %d)" % pid if pid else "stopped"))
    return lines


def service_status_block(instance_id, states, state):
    """One instance's lines of /service_status (also what `octctl status` prints)."""
    return [INSTANCE_LINE % (instance_id, state)] + [
        SERVICE_LINE % (service, "running (pid %d)" % pid if pid else "stopped")
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
