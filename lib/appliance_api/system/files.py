"""Files replaced atomically: write a temporary file beside it, fsync, rename."""
import os
import time

# Test-only: seconds to wait between writing the new file and renaming it into
# place, so a test can kill a request inside that window. Set from the config's
# [testing] pause_before_rename; always 0 on an appliance.
PAUSE_BEFORE_RENAME = 0.0


def write_atomic(path, data, mode=0o644, durable=True):
    """Replace path with data so that a reader sees the old file or the new one,
    never a mix. durable=False skips the fsyncs, for a record whose loss in a
    power cut costs nothing (a rate sample, the last reload's outcome)."""
    directory = os.path.dirname(path)
    # Any allowed name fits: 255 bytes of name plus a prefix and the pid would not.
    temporary = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path)[:200], os.getpid()))
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.chmod(temporary, mode)  # the umask may have narrowed it
        if PAUSE_BEFORE_RENAME:
            time.sleep(PAUSE_BEFORE_RENAME)
        os.rename(temporary, path)
    except BaseException:
        remove(temporary)
        raise
    if durable:
        sync_directory(directory)


def sync_directory(directory):
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path):
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None


def restore(path, data, mode=0o644):
    """Put back what read() returned before a change: the old bytes, or no file."""
    if data is None:
        remove(path)
    else:
        write_atomic(path, data, mode)


def remove(path):
    """Remove a file; True if it was there."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_stale_temporaries(directory):
    """Temporary files left by a process killed between write and rename,
    and the tree of a confined check killed half-way (a folder: the same
    dot-name, system/confinement.py). Callers hold the folder's lock, so no
    live request owns them."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                import shutil  # only a check killed half-way left a folder

                shutil.rmtree(path, ignore_errors=True)
            else:
                remove(path)
