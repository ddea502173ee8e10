"""haproxy's master CLI (master.sock in the instance folder): what its answers
say (`show proc`, `show stat`), and many instances asked at once.

A snapshot of one haproxy is one connection carrying `show proc; @1 show
stat`: the master answers both in turn, so the current worker `show proc`
names is the one whose rows `show stat` gives. Old workers still draining
after a reload are then asked by pid (`@!<pid> show stat`).

Many sockets are read at once, non-blocking, under one selector, each with a
bounded wait: a tenant whose haproxy does not answer (SIGSTOPped, busy
re-executing for a reload) costs that wait, never a stalled read. Measured
on haproxy 2.6.12 here: a snapshot of a small config is about 30 kB of CSV
header and rows, answered in about 1 ms.
"""
import os
import re
import time

from ..layout import MASTER_SOCKET_NAME

SNAPSHOT_COMMAND = "show proc; @1 show stat"


class MasterState:
    """haproxy 2.6's `show proc`: the master's reload and failed-reload counters
    ("1 [failed: 0]"), the current workers' pids and the old ones still
    finishing their connections after a reload."""

    MASTER = re.compile(r"^\d+\s+master\s+(\d+)(?:\s+\[failed: (\d+)\])?")
    WORKER = re.compile(r"^(\d+)\s+worker\b")

    def __init__(self, reloads, failed, workers, old_workers=()):
        self.reloads, self.failed, self.workers = reloads, failed, workers
        self.old_workers = list(old_workers)

    @classmethod
    def parse(cls, text):
        reloads = failed = None
        found = {"workers": [], "old": []}
        section = None
        for line in text.splitlines():
            if line.startswith("#"):
                section = line.strip("# ").split()[0] if line.strip("# ") else None
                continue
            master = cls.MASTER.match(line)
            if master:
                reloads, failed = int(master.group(1)), int(master.group(2) or 0)
            worker = cls.WORKER.match(line)
            if worker and section in found:
                found[section].append(int(worker.group(1)))
        if reloads is None:
            return None
        return cls(reloads, failed, found["workers"], found["old"])


def parse_stat(text):
    """`show stat`'s CSV as a list of {field: text}, one per row, in haproxy's
    order. The header is its first line ("# pxname,svname,..."); a field
    holding a comma (a check's description) comes quoted, hence csv."""
    import csv

    lines = text.splitlines()
    start = next((n for n, line in enumerate(lines) if line.startswith("# pxname,")), None)
    if start is None:
        return None
    reader = csv.reader(lines[start:])
    fields = [name.strip() for name in next(reader)]
    fields[0] = fields[0].lstrip("# ")
    return [dict(zip(fields, values)) for values in reader if len(values) > 1]


class Snapshot:
    """One haproxy as its master CLI showed it: state (MasterState) and rows
    {worker pid: [row]}, the current worker's rows and those of each old
    worker that answered."""

    def __init__(self, state, rows):
        self.state, self.rows = state, rows

    @property
    def current_worker(self):
        return self.state.workers[0] if self.state.workers else None

    @property
    def current_rows(self):
        return self.rows.get(self.current_worker)

    @classmethod
    def parse(cls, answer):
        """A snapshot from SNAPSHOT_COMMAND's answer, or None when it lacks
        either part (the master answered, its worker did not)."""
        head, marker, tail = answer.partition("# pxname,")
        state = MasterState.parse(head)
        rows = parse_stat(marker + tail) if marker else None
        if state is None or rows is None or len(state.workers) != 1:
            return None
        return cls(state, {state.workers[0]: rows})


def snapshots(instance_dirs, timeout):
    """{instance dir: Snapshot or None (no answer within timeout)} of every
    haproxy in instance_dirs, read at once: all current workers first, then
    the old workers the first answers named. At most 2 x timeout in all."""
    answers = ask_many({folder: (folder, SNAPSHOT_COMMAND) for folder in instance_dirs},
                       timeout)
    found = {folder: Snapshot.parse(answer) if answer else None
             for folder, answer in answers.items()}
    draining = {(folder, pid): (folder, "@!%d show stat" % pid)
                for folder, snapshot in found.items() if snapshot is not None
                for pid in snapshot.state.old_workers}
    if draining:
        for (folder, pid), answer in ask_many(draining, timeout).items():
            rows = parse_stat(answer) if answer else None
            if rows is not None:
                found[folder].rows[pid] = rows
    return found


def ask_many(requests, timeout):
    """{key: answer text, or None} for requests {key: (instance dir, command)}:
    one connection to each master CLI, all open at once (as many as this
    process may hold descriptors for), each given timeout seconds."""
    import selectors

    answers = dict.fromkeys(requests)
    waiting = list(requests.items())
    window = _open_files_window(len(waiting))
    selector = selectors.DefaultSelector()  # epoll: no FD_SETSIZE limit
    open_reads = {}  # socket: [key, chunks, deadline]

    def finish(client, answer):
        key = open_reads.pop(client)[0]
        selector.unregister(client)
        client.close()
        answers[key] = answer

    try:
        while waiting or open_reads:
            while waiting and len(open_reads) < window:
                key, (folder, command) = waiting.pop()
                client = _send(folder, command, timeout)
                if client is not None:
                    selector.register(client, selectors.EVENT_READ)
                    open_reads[client] = [key, [], time.monotonic() + timeout]
            if not open_reads:
                continue
            soonest = min(deadline for _key, _chunks, deadline in open_reads.values())
            for selected, _events in selector.select(max(0.0, soonest - time.monotonic())):
                client = selected.fileobj
                try:
                    chunk = client.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    finish(client, None)
                    continue
                if chunk:
                    open_reads[client][1].append(chunk)
                else:
                    finish(client, b"".join(open_reads[client][1]).decode("utf-8", "replace"))
            now = time.monotonic()
            for client in [c for c, (_k, _c, deadline) in open_reads.items() if deadline <= now]:
                finish(client, None)
    finally:
        for client in list(open_reads):
            client.close()
        selector.close()
    return answers


def _send(folder, command, timeout):
    """A non-blocking socket connected to folder's master CLI with command sent
    (and its write side shut: the master answers, then closes), or None.
    Connected through /proc/self/fd: the absolute path may be longer than a
    unix socket address allows."""
    import socket

    try:
        directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.setblocking(False)
        # A master that stopped accepting (its backlog full) fails here at once.
        client.connect("/proc/self/fd/%d/%s" % (directory, MASTER_SOCKET_NAME))
        # A command (15 kB at most, a certificate) fits the socket's buffer;
        # the bounded wait is for a master that has not read its last one.
        client.settimeout(timeout)
        client.sendall(command.encode() + b"\n")
        client.shutdown(socket.SHUT_WR)
        client.setblocking(False)
        return client
    except OSError:
        client.close()
        return None
    finally:
        os.close(directory)


def _open_files_window(wanted):
    """How many sockets to hold open at once: wanted, if this process may open
    that many descriptors (raising its soft limit up to the hard one), else
    what the limit leaves after a margin for everything else."""
    import resource

    margin = 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted + margin:
        target = wanted + margin if hard == resource.RLIM_INFINITY else min(hard, wanted + margin)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return max(1, wanted)
    return max(1, min(wanted, soft - margin))
