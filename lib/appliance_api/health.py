"""Which daemons run: the read endpoints', octctl status's and keepalived's
track script's view (every second), by the one rule of system/liveness.py
(standard library only, never psutil).
"""
import os
import time

from .layout import (MASTER_SOCKET_NAME, PROCESS_NAMES, RENDERED_NAMES, STOPPED_NAME,
                     existing_instances, instances_dir, open_instances_dir, scan_instances,
                     supervisor_status_path)
from .system.liveness import (SETTLING, check_process, daemon_pid, is_alive, live_pids,
                              read_pid_file)

# /service_status's layout (the original's): the id padded to column 52, then
# the state; under it each service, indented 2, padded to 17, then its state.
INSTANCE_LINE = "%-52s%s"
SERVICE_LINE = "  %-17s%s"


def running_pid(instance, service):
    """The pid of the instance's service if it runs, else None."""
    return _running(instance.dir + "/", service)


def _running(folder, service):
    return daemon_pid(folder + service + ".pid", PROCESS_NAMES[service],
                      _config_path(folder, service), _reloading_marker(folder, service))


def _pid_file(folder, service, dir_fd=None):
    return read_pid_file(folder + service + ".pid", dir_fd,
                         _reloading_marker(folder, service))


def _reloading_marker(folder, service):
    # haproxy's master unlinks its pid file and writes it anew on a reload:
    # a missing one beside its master socket may be that moment.
    return folder + MASTER_SOCKET_NAME if service == "haproxy" else None


def _config_path(folder, service):
    return os.path.abspath(folder + RENDERED_NAMES[service])


def _process(folder, service, pid):
    return check_process(pid, PROCESS_NAMES[service], _config_path(folder, service))


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
            if pid is SETTLING:
                pid = _running(base + folder, service)
            elif pid is not None:
                pid = _process(base + folder, service, pid) if pid in live else None
                if pid is SETTLING:
                    pid = _running(base + folder, service)
            states.append((service, pid))
        table.append((name, states, _state_word(states)))
    return table


def _state_word(states):
    running = sum(pid is not None for _service, pid in states)
    return "OK" if running == len(states) else "DOWN" if running == 0 else "DEGRADED"


def service_status_lines(state_dir):
    """/service_status in the original's layout."""
    lines, supervised = [], supervision(state_dir)
    for name, states, state in daemon_table(state_dir):
        lines += service_status_block(name, states, state, state_dir, supervised)
    return lines


def service_status_block(instance_id, states, state, state_dir, supervised):
    """One instance's lines of /service_status (also what `octctl status`
    prints). A stopped daemon says why when something knows: stopped by an
    operator, or backing off after crashing again and again."""
    lines = [INSTANCE_LINE % (instance_id, state)]
    for service, pid in states:
        word = "running (pid %d)" % pid if pid else "stopped"
        if not pid:
            why = why_stopped(state_dir, instance_id, service, supervised)
            word += " (%s)" % why if why else ""
        lines.append(SERVICE_LINE % (service, word))
    return lines


def why_stopped(state_dir, instance_id, service, supervised):
    """"by operator", "backing off: ..." or None, for a daemon that does not run."""
    try:
        with open(os.path.join(instances_dir(state_dir), instance_id, STOPPED_NAME)) as file:
            if service in file.read().split():
                return "by operator"
    except OSError:
        pass
    entry = supervised.get("%s/%s" % (instance_id, service))
    if entry and backing_off(entry):
        return "backing off: %d starts, next in %ds" % (
            entry["restarts"], max(0, round(entry["backing_off_until"] - time.time())))
    return None


def supervision(state_dir):
    """{"<instance>/<service>" or "keepalived": entry} of the running
    supervisor's supervisor.json (supervisor.py): restarts, last start,
    backing_off_until, last failure; {} when none runs."""
    path = supervisor_status_path(state_dir)
    if not os.access(path, os.F_OK):
        return {}
    import json

    try:
        with open(path, "rb") as file:
            status = json.loads(file.read())
        if not is_alive(int(status["pid"])):
            return {}
        return dict(status.get("daemons", {}))
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def backing_off(entry):
    """Whether a supervision() entry is a daemon in crash-loop back-off now."""
    return entry.get("backing_off_until", 0) > time.time()


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
