"""haproxy's counters over an instance's life on this node, kept in
<instance>/haproxy.counters: totals that never go backwards.

haproxy starts every new worker at zero: a reload, a certificate swap by
reload, a restart after a crash. The file holds a base per row (frontend,
backend, server) and the counters last seen of each worker still tracked; a
total is the base plus what the tracked workers count now. Each read folds:

- a tracked worker `show proc` no longer lists (finished draining, or died
  with its master) goes into the base with its last seen counters;
- a counter lower than last seen in the same worker (`clear counters`)
  means a reset: what it had counted goes into the base;
- an old worker still draining is read by pid (`@!<pid>`) and stays tracked.

What is lost is what a worker served after its last read: a reload and a
stop read the outgoing worker first (keep(), from system/haproxy.py), and
every GET of stats or /metrics is a read. A reload still loses what the old
worker serves while the master re-executes itself: its CLI is silent then
(about 100 ms here), and an old worker with no connection left exits as
soon as the new one listens. Measured under `make bench-reload`'s load:
about 45 ms of traffic per reload (docs/operations.md). Readers take the file's lock
(flock on the instance folder) only to fold and write, never while they
wait on a socket. system/haproxy_cli.py reads the sockets.
"""
import json
import os

from . import files
from ..layout import COUNTERS_NAME

# show stat's cumulative fields, kept: sessions, bytes in and out, HTTP
# requests, 5xx answers, denied requests. Empty (not counted by this mode) is None.
COUNTED = ("stot", "bin", "bout", "req_tot", "hrsp_5xx", "dreq")
# show stat's "type": 0 frontend, 1 backend, 2 server (3, a listener, is not kept).
KEPT_TYPES = ("0", "1", "2")


def row_key(row):
    """A row's identity across workers: type, proxy and server name (haproxy
    forbids tabs in names, so the joined form is unambiguous)."""
    return "%s\t%s\t%s" % (row["type"], row["pxname"], row["svname"])


# Counted by HTTP only: a TCP-mode proxy shows them empty or, after a reload, at 0.
HTTP_ONLY = ("req_tot", "hrsp_5xx")


def counted(rows):
    """{row key: [count or None per COUNTED]} of show stat's rows."""
    return {row_key(row): [None if field in HTTP_ONLY and row.get("mode") == "tcp"
                           else _number(row.get(field, "")) for field in COUNTED]
            for row in rows if row.get("type") in KEPT_TYPES}


def _number(text):
    try:
        return int(text)
    except ValueError:
        return None


class Ledger:
    """base {row key: [count or None]} and workers {pid: {row key: [count or None]}}."""

    def __init__(self, base=None, workers=None):
        self.base = base or {}
        self.workers = workers or {}

    @classmethod
    def from_text(cls, text):
        try:
            stored = json.loads(text)
            return cls(stored["base"], {int(pid): rows for pid, rows in stored["workers"].items()})
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()  # unreadable: start again rather than fail every read

    def to_text(self):
        return json.dumps({"base": self.base,
                           "workers": {str(pid): rows for pid, rows in self.workers.items()}},
                          sort_keys=True)

    def observe(self, listed, readings):
        """Fold what a read saw: listed, the pids `show proc` named (current
        and old workers), or None when the master did not answer; readings,
        {pid: counted(rows)} of the workers that answered."""
        if listed is not None:
            for pid in [pid for pid in self.workers if pid not in listed]:
                self._add_to_base(self.workers.pop(pid))
        for pid, counts in readings.items():
            seen = self.workers.setdefault(pid, {})
            for key, values in counts.items():
                before = seen.get(key)
                if before is not None:
                    reset = [old if old is not None and new is not None and new < old else None
                             for old, new in zip(before, values)]
                    if any(count is not None for count in reset):
                        self._add_to_base({key: reset})
                seen[key] = values

    def _add_to_base(self, counts):
        for key, values in counts.items():
            self.base[key] = _add(self.base.get(key), values)

    def totals(self):
        """{row key: [total or None per COUNTED]}: the base plus every tracked
        worker; None where no worker ever counted it (requests in TCP mode)."""
        found = {key: list(values) for key, values in self.base.items()}
        for counts in self.workers.values():
            for key, values in counts.items():
                found[key] = _add(found.get(key), values)
        return found


def _add(first, second):
    if first is None:
        return list(second)
    return [a if b is None else b if a is None else a + b for a, b in zip(first, second)]


def record(instance_dir, snapshot):
    """Fold a snapshot (system/haproxy_cli.Snapshot, or None when haproxy did
    not answer) into the instance's ledger; its totals afterwards."""
    path = instance_dir + "/" + COUNTERS_NAME
    if snapshot is None:
        return Ledger.from_text(_read(path)).totals()
    listed = set(snapshot.state.workers) | set(snapshot.state.old_workers)
    readings = {pid: counted(rows) for pid, rows in snapshot.rows.items()}
    with _locked(instance_dir):
        text = _read(path)
        ledger = Ledger.from_text(text)
        ledger.observe(listed, readings)
        new_text = ledger.to_text()
        if new_text != text:
            # Not fsynced: a power cut costs what was served since the last read.
            files.write_atomic(path, new_text.encode(), durable=False)
    return ledger.totals()


def keep(instance_dir, timeout):
    """Read the running haproxy's workers into the ledger now: before a reload
    or a stop hands its traffic to a worker that starts at zero."""
    from .haproxy_cli import snapshots

    try:
        record(instance_dir, snapshots([instance_dir], timeout)[instance_dir])
    except OSError:
        pass  # counters are for the record: they must not fail a reload or a stop


def _read(path):
    try:
        with open(path, "rb") as file:
            return file.read().decode("utf-8", "replace")
    except (FileNotFoundError, NotADirectoryError):
        return ""


class _locked:
    """flock on the instance folder itself: one reader folds at a time, and no
    lock file is added to the folder. Nothing else locks the folder."""

    def __init__(self, instance_dir):
        self.instance_dir = instance_dir

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.instance_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info):
        os.close(self.fd)
