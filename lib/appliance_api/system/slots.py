"""The appliance-wide cap on concurrent changes: N slots, each a file that a
change holds with flock() for its whole duration.

lighttpd starts one CGI process per request with no cap of its own; 60
concurrent certificate PUTs held 1.6 GB. A change takes a slot before it
imports anything heavy, so a request over the cap costs only a bare
interpreter while it waits. flock() dies with its process: a killed
request never keeps a slot.
"""
import contextlib
import os
import time

from . import Busy
from .locks import try_lock
from ..layout import change_slot_path


@contextlib.contextmanager
def change_slot(config):
    """Hold one of the [limits] concurrent_changes slots. Waits up to
    change_wait seconds for one, then raises Busy (503 with
    Retry-After) having changed nothing."""
    count = max(1, int(config.number("limits", "concurrent_changes")))
    deadline = time.monotonic() + config.number("limits", "change_wait")
    fd = _take_free_slot(config.state_dir, count)
    while fd is None:
        if time.monotonic() >= deadline:
            raise Busy("Too many changes in progress; retry later",
                                     "%d changes run at once on this appliance" % count,
                                     retry_after=1)
        # Jitter (random costs an import): a burst of waiters should not poll in step.
        time.sleep(0.02 + (os.getpid() % 7) / 100)
        fd = _take_free_slot(config.state_dir, count)
    try:
        yield
    finally:
        os.close(fd)


def _take_free_slot(state_dir, count):
    first = os.getpid() % count  # spread the probes over the slots
    for offset in range(count):
        path = change_slot_path(state_dir, (first + offset) % count)
        try:
            fd = try_lock(path)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = try_lock(path)
        if fd is not None:
            return fd
    return None
