"""Every lock of the appliance is a flock() taken here. One per instance:
every change to an instance holds it for its whole duration; one
appliance-wide lock, held briefly, around every step that reads or changes
what instances share (listeners, service IPs, accounting). Order: an
instance's lock first, then the appliance's, never the other way. The
change slots, topology.lock and sync.lock are taken without waiting
(try_lock); held() asks whether anyone holds one.

flock() locks die with their process, so a request killed mid-way never
leaves anything locked. A SIGTERM while a change holds an instance's lock
ends the process once the change is done (signals.py); one that comes while
it still waits ends it at once, before it has changed anything: a request
lighttpd gave up on must not land later, over a newer one.
"""
import contextlib
import fcntl
import os
import time

from . import files
from ..layout import api_certificate_lock_path, appliance_lock_path


@contextlib.contextmanager
def appliance_lock(state_dir):
    """Hold the appliance-wide lock (the state folder must exist)."""
    with _file_lock(appliance_lock_path(state_dir)):
        yield


@contextlib.contextmanager
def api_certificate_lock(state_dir):
    """One replacement of the API's own certificate at a time; a SIGTERM
    waits until lighttpd serves the new file or the old one is back."""
    from .signals import terminate_after_change

    with terminate_after_change(), _file_lock(api_certificate_lock_path(state_dir)):
        yield


@contextlib.contextmanager
def _file_lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def instance_lock(instance, create):
    """Hold the instance's lock; with create, make its folder first.

    Without create and without a folder there is nothing to lock: the body
    runs unlocked and finds no instance. It is given whether it holds the lock. On the way out, an instance left with
    no uploaded file loses its folder (the contract: deleting the last file
    removes the directory; a failed first upload leaves nothing behind).
    """
    from .signals import terminate_after_change  # /status takes other locks: not its cost

    fd = _acquire(instance, create)
    with terminate_after_change():
        try:
            if fd is not None:
                # A request killed between write and rename left its temporary file.
                files.remove_stale_temporaries(instance.dir)
                files.remove_stale_temporaries(instance.certificates_dir)
                files.remove_stale_temporaries(instance.crt_lists_dir)
            yield fd is not None
        finally:
            try:
                if fd is not None and not instance.exists():
                    import shutil  # with bz2 and lzma: 5 ms that only this path pays

                    # Waiters hold the unlinked lock file; they notice and retry.
                    shutil.rmtree(instance.dir, ignore_errors=True)
            finally:
                if fd is not None:
                    os.close(fd)


def _acquire(instance, create):
    while True:
        if create:
            os.makedirs(instance.dir, mode=0o755, exist_ok=True)
        try:
            fd = os.open(instance.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            if create:
                continue  # removed between makedirs and open by the last holder
            return None
        fcntl.flock(fd, fcntl.LOCK_EX)
        # The holder before us may have removed the folder (and this lock file).
        try:
            same = os.stat(instance.lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def try_lock(path, patience=0.0):
    """path's lock, taken exclusively without waiting for a holder: an open
    descriptor (closing it lets go), or None when another process holds it.
    patience: seconds to look again, past the instant a held() probe holds
    it shared. The folder must exist."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.01)


def held(path):
    """Whether some process holds path's lock exclusively now. The probe takes
    it shared and lets go at once, so probes running together never see each
    other. A missing or unopenable file: not held."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
