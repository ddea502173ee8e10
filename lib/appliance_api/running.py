"""What runs: the one owner of each daemon's desired state and of bringing
the daemons to it.

The desired state, read from an instance's folder: every stored config's
daemon runs that config, except a service an operator stopped on purpose
(octctl stop; kept in `stopped.by-operator` until octctl start or a new
config). Two records say where the machine may differ from it:

- reload.pending names, a line each, the services whose daemons may not run
  what is stored. A change names the ones it will start or reload before it
  writes a file they read (pending()); once it has run them, or rolled back,
  it takes off the names it added, and a full start or reload takes off its
  own (caught_up). A name an earlier change left stays until then: a
  certificate swapped in haproxy's memory is not its stored config. A
  request killed in between (SIGKILL: a SIGTERM waits for the change) leaves
  its names, and catch_up runs them.
- a daemon that is not running although it should: it crashed, or the
  machine rebooted. converge() starts it; the supervisor (supervisor.py) and
  the boot call it, and every change calls catch_up first. A daemon that
  runs the instance's config although its pid file was deleted or names
  another process (a folder edited by hand) is adopted first, never
  started twice (Daemon.adopt_orphan).

Callers hold the instance's lock (system.locks.instance_lock).
"""
import contextlib
import os

from .errors import Conflict
from .layout import SERVICES
from .system import files
from .system.daemons import DaemonFailed, daemon_for


def _read_names(path):
    try:
        with open(path, "rb") as file:
            named = file.read().decode("ascii", "replace").split()
    except OSError:  # missing, or not a file (edited by hand): names nothing
        return set()
    return set(named) & set(SERVICES)


def _write_names(path, services):
    if services:
        text = "".join(service + "\n" for service in SERVICES if service in services)
        files.write_atomic(path, text.encode(), durable=False)
    else:
        files.remove(path)


def behind(instance):
    """The services whose daemons a change left behind the stored files."""
    return _read_names(instance.reload_pending)


def stopped_on_purpose(instance):
    """The services an operator stopped (octctl stop) and nobody started since."""
    return _read_names(instance.stopped_record)


def wanted(instance, service):
    """Whether the service's daemon should run now: a stored config, not stopped on purpose."""
    return os.path.exists(instance.template(service)) and \
        service not in stopped_on_purpose(instance)


def stopped_by_operator(instance, service):
    _write_names(instance.stopped_record, stopped_on_purpose(instance) | {service})


def started_by_operator(instance, service):
    """octctl start or a new config: the service should run again."""
    stopped = stopped_on_purpose(instance)
    if service in stopped:
        _write_names(instance.stopped_record, stopped - {service})


@contextlib.contextmanager
def pending(instance, services):
    """Around a change that will start or reload services' daemons after
    writing what they read: named in reload.pending meanwhile."""
    added = set(services) - behind(instance)
    if added:
        _write_names(instance.reload_pending, behind(instance) | added)
    try:
        yield
    except Conflict:  # rolled back: they run the restored files
        _drop(instance, added)
        raise
    _drop(instance, added)


def _drop(instance, services):
    now = behind(instance)
    if now & services:
        _write_names(instance.reload_pending, now - services)


def caught_up(instance, service):
    """service's daemon runs what is stored now (a start or reload), or was
    stopped on purpose (octctl stop, a config DELETE): not behind any more."""
    _drop(instance, {service})


class Outcome:
    """What catch_up or converge did, for callers to count rather than read
    back: the answer's lines, the services it ran, those that failed (and why)."""

    def __init__(self):
        self.lines, self.caught_up, self.failed, self.failed_lines = [], [], [], []

    def ran(self, service, line):
        self.lines.append(line)
        self.caught_up.append(service)

    def failure(self, line, service):
        self.lines.append(line)
        self.failed.append(service)
        self.failed_lines.append(line)


def catch_up(instance, config):
    """Start or reload the daemons a killed change left behind its stored
    files; an Outcome. Every change of the instance calls it first, under the
    instance's lock, and so does every sync run (octctl sync, every 10 s on
    each node); with nothing marked it costs two failed opens. A daemon that
    still fails stays marked and says so in a line: the change under way
    goes on, and may be the one that mends it."""
    return _converge(instance, config, start_dead=False)


def converge(instance, config):
    """Bring every daemon of the instance to its desired state: started when
    it should run and does not (a crash, a reboot), run anew when behind its
    stored files; an Outcome. The supervisor and the boot call it."""
    return _converge(instance, config, start_dead=True)


def plan(stored, marked, stopped, start_dead):
    """What converge (start_dead) or catch_up does to each service, decided
    from the records alone: {service: "forget"} for a mark whose config is
    gone, "run" for a marked one (start or reload it: a change left it
    behind), "ensure" for one that should run (start it unless it runs);
    services left out are left alone (stopped on purpose, or not asked)."""
    actions = {}
    for service in SERVICES:
        if service not in stored:
            if service in marked:
                actions[service] = "forget"
        elif service in marked:
            actions[service] = "run"  # a mark on a stopped one too: a new config PUT, killed
        elif start_dead and service not in stopped:
            actions[service] = "ensure"
    return actions


def _converge(instance, config, start_dead):
    outcome = Outcome()
    marked, stopped = behind(instance), stopped_on_purpose(instance)
    stored = {service for service in SERVICES if os.path.exists(instance.template(service))}
    left_behind = set(marked)
    for service, action in plan(stored, marked, stopped, start_dead).items():
        if action == "forget":
            left_behind.discard(service)  # its config is gone: nothing to run
            continue
        daemon = daemon_for(service, instance, config)
        runs = _runs_or_adopted(daemon, outcome)  # adopted even when behind: then reloaded
        if action == "ensure" and runs:
            continue  # runs, and runs what is stored
        render_from_template(daemon)  # a config PUT killed between its two renames
        try:
            outcome.ran(service, daemon.apply())
            left_behind.discard(service)
            if service in stopped:
                started_by_operator(instance, service)
        except DaemonFailed as failure:
            outcome.failure("%s daemon for %s still does not run its stored files: %s" % (
                service, instance.id, failure), service)
    if left_behind != marked:
        _write_names(instance.reload_pending, left_behind)
    return outcome


def _runs_or_adopted(daemon, outcome):
    """Whether the daemon runs: per its pid file, or found by its command
    line when a hand-edited state folder lost its pid file (adopted, so
    that no second daemon starts on the same config)."""
    if daemon.process() is not None:
        return True
    orphan = daemon.adopt_orphan()
    if orphan is None:
        return False
    outcome.lines.append("%s daemon for %s runs with no pid file naming it: adopted (pid %d)"
                         % (daemon.name, daemon.instance.id, orphan.pid))
    return True


def control(instance, services, action, config):
    """octctl start, stop or reload of services' daemons: (lines, errors).
    A stop is remembered (stopped on purpose) until a start or a new config."""
    lines, errors = [], []
    if action == "stop":
        services = list(reversed(services))  # stunnel in front goes first
    for service in services:
        daemon = daemon_for(service, instance, config)
        process = daemon.process()
        try:
            if action == "stop":
                stopped_by_operator(instance, service)
                lines.append(daemon.killed_message() if daemon.stop()
                             else "%s daemon %s was not running." % (service, instance.id))
                caught_up(instance, service)
                continue
            if action == "start":
                started_by_operator(instance, service)
                if process is not None:
                    lines.append("%s daemon for %s already running (pid %d)"
                                 % (service, instance.id, process.pid))
                    continue
            elif process is None:
                errors.append("%s daemon %s is not running: not reloaded (octctl start "
                              "starts it)" % (service, instance.id))
                continue
            render_from_template(daemon)
            lines.append(daemon.apply())
            caught_up(instance, service)
        except DaemonFailed as failure:
            errors.append("octctl %s: %s" % (action, failure))
            if failure.output.strip():
                errors.append(failure.output.rstrip())
    return lines, errors


def render_from_template(daemon):
    """Make the rendered config the stored template's rendering again. A PUT
    killed between its two renames leaves a rendered file GET does not show;
    no reload may run it. True when it was not (a reload is then due)."""
    template = files.read(daemon.instance.template(daemon.name))
    if template is None:
        return False
    rendered = daemon.render(template.decode("utf-8", "replace")).encode("utf-8")
    if files.read(daemon.rendered_path) != rendered:
        files.write_atomic(daemon.rendered_path, rendered)
        return True
    return False
