"""Is every configured daemon of this node running? Standard library only:
keepalived asks every second (its track script), so a check reads just the
pid files and /proc, never psutil."""
import os

from .layout import RENDERED_NAMES, existing_instances


def daemon_running(instance, service):
    """The pid in the service's pid file runs, is no zombie, and runs the
    instance's rendered config."""
    try:
        with open(instance.pid_file(service), "rb") as file:
            pid = int(file.read(32).split()[0])
        with open("/proc/%d/stat" % pid, "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
        with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
            words = cmdline.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return False
    return state not in (b"Z", b"X") and \
        os.fsencode(os.path.abspath(instance.rendered(service))) in words


def changing(instance):
    """Whether a change holds the instance's lock now: a first start, a reload
    or a DELETE in flight, when a daemon may be down for a moment by design."""
    from .system.locks import held

    return held(instance.lock_path)


def problems(state_dir):
    """One line per configured daemon that does not run (instances in the
    middle of a change aside: a health check must not move every tenant's
    addresses because one tenant's haproxy is reloading)."""
    found = []
    for instance in existing_instances(state_dir):
        if changing(instance):
            continue
        for service in instance.configured_services():
            if service in RENDERED_NAMES and not daemon_running(instance, service):
                found.append("%s: %s is not running" % (instance.id, service))
    return found
