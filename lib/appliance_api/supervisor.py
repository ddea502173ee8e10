"""`octctl supervise`: the appliance heals itself.

One long-running process per appliance. At its start (the boot, or after it
was restarted) it converges every stored instance to what should run
(running.converge, on a few threads at once), then tells systemd it is
ready. From then on it holds a pidfd of every daemon it saw running: the
moment one exits, the instance's lock is taken and running.converge decides,
with fresh eyes, whether that was a crash (start it again) or a change (a
DELETE, an `octctl stop`, a stunnel restarted on new listeners: nothing to
do). A scan every scan_interval seconds catches what no pidfd saw (a daemon
started by someone else, a crash while a change held the lock) and
keepalived, which sharedstate.converge brings back on a pair.

A daemon that keeps dying backs off, as systemd's StartLimitBurst and
Kubernetes' crash-loop back-off do: `burst` starts within `window` seconds
are free, then each further one waits twice as long as the last, from 1 s
up to max_delay; a daemon that has run for `window` seconds is healthy
again. What is backing off is written to supervisor.json in the state
folder, which /service_status, /listeners and `octctl show` read
(health.supervision). The
supervisor never touches the change gate: a restart is not a change of
what is stored, and must not wait for a slot behind the controller's PUTs.
"""
import json
import os
import select
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .layout import PROCESS_NAMES, existing_instances, supervisor_status_path
from .system import files, liveness

KEEPALIVED = ("", "keepalived")  # the appliance's own daemon, beside (instance id, service)


class BackOff:
    """When a daemon that keeps exiting may be started again: `burst` starts
    are free, then each waits twice as long after the last start as the one
    before (1 s up to max_delay). Only a run of `window` seconds or more
    (from its start to its exit, time spent waiting aside) makes it healthy
    again."""

    def __init__(self, burst=3, window=30.0, max_delay=60.0):
        self.burst, self.window, self.max_delay = burst, window, max_delay
        self.count, self.delay, self.last_start, self.failure = 0, 0.0, None, None
        self.running = False  # started by us, and no exit seen since
        self.waiting = False  # down, and its next start is not due yet

    def next_start(self, now):
        """The monotonic time from which a start is allowed."""
        if self.count < self.burst:
            return now
        return self.last_start + self.delay

    def started(self, now):
        self.waiting, self.running = False, True
        self.count, self.last_start = self.count + 1, now
        if self.count >= self.burst:
            self.delay = min(self.max_delay, self.delay * 2 if self.delay else 1.0)

    def exited(self, now):
        """It was seen gone (once per run): healthy again if it ran a window."""
        if self.running and now - self.last_start >= self.window:
            self.count, self.delay = 0, 0.0
        self.running = False


class Supervisor:
    def __init__(self, config, log=None, workers=4):
        self.config = config
        self.scan_interval = config.number("supervisor", "scan_interval")
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.lock = threading.Lock()
        self.watched = {}  # key -> (pid, pidfd)
        self.queued = set()  # keys a worker will look at
        self.backoff = {}  # key -> BackOff
        self.poll = select.poll()
        self.by_fd = {}
        self.stopping = threading.Event()
        self.status_written = None

    # The boot ----------------------------------------------------------

    def converge_all(self):
        """Every stored instance to its desired state; (daemons started, failures)."""
        jobs = [self.pool.submit(self._converge_instance, instance)
                for instance in existing_instances(self.config.state_dir)]
        started = failed = 0
        for job in jobs:
            outcome = job.result()
            if outcome is not None:
                started += len(outcome.caught_up)
                failed += len(outcome.failed)
        return started, failed

    def _converge_instance(self, instance):
        from .running import converge
        from .system.locks import instance_lock

        try:
            with instance_lock(instance, create=False):
                if not instance.exists():
                    return None
                outcome = converge(instance, self.config)
        except Exception as error:  # one tenant's trouble must not stop the others
            self.log("supervisor: %s: %s: %s" % (instance.id, type(error).__name__, error))
            return None
        for line in outcome.lines:
            self.log("supervisor: " + line)
        return outcome

    # The watch ---------------------------------------------------------

    def run(self, ready=None):
        """Converge, say ready, then supervise until stop()."""
        started, failed = self.converge_all()
        self.log("supervisor: ready: %d daemons started, %d failing" % (started, failed))
        if ready:
            ready()
        while not self.stopping.is_set():
            self.scan()
            self.wait(self.scan_interval)
        self.pool.shutdown(wait=True)

    def stop(self):
        self.stopping.set()

    def scan(self):
        """Watch every running daemon; queue those that should run and do not.
        One instance's trouble (a file where a folder belongs, a folder gone
        mid-scan) is logged and the scan goes on; so does the next one."""
        now = time.monotonic()
        seen = set()
        try:
            instances = existing_instances(self.config.state_dir, snapshot=True)
        except OSError as error:
            self.log("supervisor: the state folder cannot be read: %s" % error)
            instances = []
        for instance in instances:
            try:
                self._scan_instance(instance, now, seen)
            except Exception as error:
                self.log("supervisor: %s: %s: %s" % (instance.id, type(error).__name__, error))
        try:
            self._scan_keepalived(now, seen)
        except Exception as error:
            self.log("supervisor: keepalived: %s: %s" % (type(error).__name__, error))
        with self.lock:
            for key in [k for k in self.watched if k not in seen]:
                self._unwatch(key)
            for key in [k for k in self.backoff if k not in seen]:
                del self.backoff[key]  # its config is gone
        try:
            self._write_status(now)
        except OSError as error:  # a full disk: the figures wait, the watch goes on
            self.log("supervisor: supervisor.json not written: %s" % error)

    def _scan_instance(self, instance, now, seen):
        from .health import changing, running_pid

        for service in instance.configured_services():
            key = (instance.id, service)
            seen.add(key)
            pid = running_pid(instance, service)
            if pid is not None:
                self._watch(key, pid)
            elif not changing(instance) and self._wanted(instance, service):
                self._found_down(key, now)

    def _scan_keepalived(self, now, seen):
        pid = self._keepalived_pid()
        if pid is not None:
            seen.add(KEEPALIVED)
            self._watch(KEEPALIVED, pid)
        elif self._keepalived_wanted():
            seen.add(KEEPALIVED)
            self._found_down(KEEPALIVED, now)

    def _found_down(self, key, now):
        """A daemon that should run, found not running by a scan (no pidfd saw
        it go: it died while a change held the lock, or before we watched it)."""
        with self.lock:
            backoff = self.backoff.get(key)
            fresh = (backoff is None or backoff.running) and key not in self.queued
            if backoff is not None:
                backoff.exited(now)
        if fresh:
            self.log("supervisor: %s found not running" % _name(key))
        self._queue(key, now)

    def wait(self, timeout):
        """Sleep until timeout, or until a watched daemon exits (then queue it)."""
        deadline = time.monotonic() + timeout
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for fd, _event in self.poll.poll(min(left, 0.2) * 1000):
                with self.lock:
                    key = self.by_fd.get(fd)
                    if key is None:
                        continue
                    pid = self.watched[key][0]
                    self._unwatch(key)
                    now = time.monotonic()
                    if key in self.backoff:
                        self.backoff[key].exited(now)
                self.log("supervisor: %s exited (pid %d)" % (_name(key), pid))
                self._queue(key, now)

    def _watch(self, key, pid):
        with self.lock:
            backoff = self.backoff.get(key)
            if backoff is not None:
                backoff.waiting = False  # it runs (whoever started it)
            if key in self.watched:
                if self.watched[key][0] == pid:
                    return
                self._unwatch(key)
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                return  # gone already: the next scan queues it
            self.watched[key] = (pid, pidfd)
            self.by_fd[pidfd] = key
            self.poll.register(pidfd, select.POLLIN)

    def _unwatch(self, key):
        _pid, pidfd = self.watched.pop(key)
        self.poll.unregister(pidfd)
        del self.by_fd[pidfd]
        os.close(pidfd)

    def _queue(self, key, now):
        if key != KEEPALIVED:
            from .layout import Instance

            if not self._wanted(Instance(self.config.state_dir, key[0]), key[1]):
                return  # deleted or stopped on purpose: not a crash
        with self.lock:
            if key in self.queued:
                return
            backoff = self.backoff.setdefault(key, BackOff(*self._policy()))
            if backoff.next_start(now) > now:
                if not backoff.waiting:
                    backoff.waiting = True
                    self.log("supervisor: %s keeps exiting: backing off, next start in %gs"
                             % (_name(key), backoff.next_start(now) - now))
                return  # a later scan queues it once its wait is over
            self.queued.add(key)
        self.pool.submit(self._restart, key)

    def _policy(self):
        number = self.config.number
        return (int(number("supervisor", "burst")), number("supervisor", "window"),
                number("supervisor", "max_delay"))

    # A restart ---------------------------------------------------------

    def _restart(self, key):
        from .system.commands import system_stopping

        if system_stopping():
            with self.lock:
                self.queued.discard(key)
            return  # the shutdown stops it: not a crash
        try:
            if key == KEEPALIVED:
                self._restart_keepalived()
            else:
                self._restart_daemon(key)
        except Exception as error:
            self.log("supervisor: %s: %s: %s" % (_name(key), type(error).__name__, error))
            self._note_start(key, "%s: %s" % (type(error).__name__, error))
        finally:
            with self.lock:
                self.queued.discard(key)

    def _restart_daemon(self, key):
        from .layout import Instance
        from .running import converge
        from .system.daemons import daemon_for
        from .system.locks import instance_lock

        instance = Instance(self.config.state_dir, key[0])
        with instance_lock(instance, create=False) as locked:
            if not locked or not self._wanted(instance, key[1]):
                return  # deleted, or stopped on purpose, while we waited
            daemon = daemon_for(key[1], instance, self.config)
            process = daemon.process()
            if process is not None:
                self._watch(key, process.pid)  # a change started it anew
                return
            outcome = converge(instance, self.config)
            process = daemon.process()
        for line in outcome.lines:
            self.log("supervisor: " + line)
        failed = key[1] in outcome.failed
        self._note_start(key, outcome.failed_lines[0] if failed else None)
        if process is not None:
            self._watch(key, process.pid)

    def _restart_keepalived(self):
        from . import sharedstate

        sharedstate.converge(self.config)
        pid = self._keepalived_pid()
        self._note_start(KEEPALIVED, None if pid else "keepalived did not start")
        self.log("supervisor: keepalived %s" % ("started (pid %d)" % pid if pid
                                                else "did not start"))
        if pid is not None:
            self._watch(KEEPALIVED, pid)

    def _note_start(self, key, failure):
        with self.lock:
            backoff = self.backoff.setdefault(key, BackOff(*self._policy()))
            backoff.started(time.monotonic())
            backoff.failure = failure

    # What should run ---------------------------------------------------

    def _wanted(self, instance, service):
        from .running import wanted

        return wanted(instance, service)

    def _keepalived_pid(self):
        from .layout import vrrp_dir

        folder = os.path.abspath(vrrp_dir(self.config.state_dir))
        pid = liveness.daemon_pid(folder + "/keepalived.pid", PROCESS_NAMES["keepalived"],
                                  folder + "/keepalived.conf")
        return pid

    def _keepalived_wanted(self):
        """As sharedstate.converge decides it: the topology carried out is a
        pair, this node is in it, and the API manages the network."""
        from . import topology
        from .sharedstate import plan_shared

        if not self.config.flag("network", "manage"):
            return False
        stored = topology.load(self.config.state_dir)
        mode, target = plan_shared(stored, stored["status"] == topology.TRANSITION
                                   and topology.transition_running(self.config.state_dir))
        if mode != "pair":
            return False
        from .appliance import own_addresses

        return topology.own_address(target, own_addresses(self.config)) is not None

    # What others read --------------------------------------------------

    def _write_status(self, now):
        """supervisor.json: the daemons restarted or backing off, for the reads."""
        wall = time.time()
        daemons = {}
        with self.lock:
            for key, backoff in self.backoff.items():
                if not backoff.count:
                    continue
                entry = {"restarts": backoff.count,
                         "last_start": round(wall - (now - backoff.last_start), 3)}
                if backoff.waiting:
                    entry["backing_off_until"] = round(wall + backoff.next_start(now) - now, 3)
                if backoff.failure:
                    entry["last_failure"] = backoff.failure[:300]
                daemons[_name(key)] = entry
        text = json.dumps({"pid": os.getpid(), "daemons": daemons}, sort_keys=True)
        if text != self.status_written:
            files.write_atomic(supervisor_status_path(self.config.state_dir),
                               text.encode(), durable=False)
            self.status_written = text


def _name(key):
    return key[1] if key == KEEPALIVED else "%s/%s" % key


def notify_ready():
    """sd_notify(READY=1) when systemd started us as Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    import socket

    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", address)
