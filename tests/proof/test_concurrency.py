"""Concurrent writers through lighttpd (issue 5): 50 requests at once on one
instance, then 50 instances at once, with the real daemons.

What must hold: no 500 and only the contract's codes; no interleaved, partial or
leftover temporary file; the stored state is what the last successful write made
(and, when a haproxy config is stored, a live haproxy serves it); no daemon
outlives its instance or its config.

Which write was last: every change holds the instance's flock for its whole
duration, so the order in which requests release that lock is the order of the
writes. A thread watches /proc/locks while a round runs and tells the requests
apart by a header of ours that lighttpd passes to the CGI's environment.
"""
import collections
import concurrent.futures
import os
import random
import re
import threading
import time
import uuid

import psutil
import pytest

from e2e.conftest import pki  # noqa: F401  (session fixture)
from e2e.helpers import (Reply, accepts, daemons_under, eventually, free_port, http_get, pid_gone,
                         served_certificate)

from . import figures
from .lighttpd_site import (haproxy_template, leftover_temporaries, listener_bundles, read_bytes, render,
                            start_site, stop_site)

CONCURRENT = 50
ROUNDS = figures.scaled(3, 10)
CERT_NAME = "localhost.pem"
SPREAD = 0.2  # seconds over which a round's requests start: all 50 are in flight at once
TAG_HEADER = "X-Proof-Request"
TAG_ENVIRON = b"HTTP_X_PROOF_REQUEST="

# (method, what) -> the codes the contract allows for it
ALLOWED = {
    ("PUT", "haproxy"): {201, 409},
    ("PUT", "certificate"): {201, 409},
    ("GET", "haproxy"): {200, 404},
    ("GET", "certificate"): {200, 404},
    ("GET", "instances"): {200},
    ("GET", "service_status"): {200},
    ("DELETE", "instance"): {200, 404},
    ("DELETE", "haproxy"): {200, 404},
}
# One round's mix of 50: (method, what, how many)
MIX = [("PUT", "haproxy", 14), ("PUT", "certificate", 10),
       ("GET", "haproxy", 4), ("GET", "certificate", 4), ("GET", "instances", 3),
       ("GET", "service_status", 3), ("DELETE", "instance", 6), ("DELETE", "haproxy", 6)]
COUNTS = {(method, what): n for method, what, n in MIX}
assert sum(COUNTS.values()) == CONCURRENT

ROUND_LOG = []  # one line per round, shown when a test fails


def served_string(template):
    return re.search(rb"string (\S+)\n", template).group(1)


class Outcome:
    def __init__(self, tag, method, what, content, reply, start, end):
        self.tag, self.method, self.what, self.content = tag, method, what, content
        self.reply, self.start, self.end = reply, start, end

    @property
    def status(self):
        return self.reply.status

    @property
    def succeeded_write(self):
        return self.method != "GET" and self.status in (200, 201)

    def __repr__(self):
        return "<%s %s %s %.2f-%.2f -> %r>" % (self.tag, self.method, self.what, self.start,
                                               self.end, self.reply)


def _run(api, method, path, upload=None, tag=None):
    args = ["-X", method] + (["-T", upload] if upload else [])
    if tag:
        args += ["-H", "%s: %s" % (TAG_HEADER, tag)]
    start = time.monotonic()
    completed = api.run_curl(*args, api.url(path))
    end = time.monotonic()
    return Reply(completed), start, end


def run_concurrently(jobs):
    """jobs: callables; all started at once, results in order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return [future.result() for future in [pool.submit(job) for job in jobs]]


class LockWatcher(threading.Thread):
    """Polls /proc/locks: for each tagged request, the last time it was seen holding
    a flock (its release, to within a poll), and the most requests seen waiting."""

    def __init__(self):
        super().__init__(daemon=True)
        self.last_held = {}  # tag -> monotonic time it was last seen holding a lock
        self.peak_waiters = 0
        self._tags = {}  # pid -> tag or None
        self._halt = threading.Event()

    def _tag(self, pid):
        if pid not in self._tags:
            try:
                with open("/proc/%d/environ" % pid, "rb") as file:
                    environ = file.read().split(b"\0")
                found = [v[len(TAG_ENVIRON):] for v in environ if v.startswith(TAG_ENVIRON)]
                self._tags[pid] = found[0].decode() if found else None
            except OSError:
                return None  # gone, or not readable yet: ask again next time
        return self._tags[pid]

    def run(self):
        while not self._halt.is_set():
            try:
                with open("/proc/locks") as file:
                    lines = file.read().splitlines()
            except OSError:
                lines = []
            now, waiters = time.monotonic(), set()
            for line in lines:
                fields = line.split()
                waiting = len(fields) > 1 and fields[1] == "->"
                if waiting:
                    fields = fields[:1] + fields[2:]
                if len(fields) < 5 or fields[1] != "FLOCK":
                    continue
                tag = self._tag(int(fields[4]))
                if tag is None:
                    continue
                if waiting:
                    waiters.add(tag)
                else:
                    self.last_held[tag] = now
            self.peak_waiters = max(self.peak_waiters, len(waiters))
            time.sleep(0.002)

    def stop(self):
        self._halt.set()
        self.join(5)


def haproxy_pid(instance_dir):
    try:
        with open(os.path.join(instance_dir, "haproxy.pid")) as file:
            return int(file.read().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def orphans(api, expected=lambda: set(), instances=None, timeout=8):
    """Live haproxy/stunnel processes under the site (of instances, if given) whose
    pids expected() does not account for (an instance's master and its workers);
    a few seconds to go (an old worker finishes its soft stop after a reload)."""
    def extra():
        allowed = expected()
        return [p for p in daemons_under(api.state_dir) if p.pid not in allowed and (
            instances is None or any(i in " ".join(_cmdline(p)) for i in instances))]
    eventually(lambda: not extra(), timeout, interval=0.1)
    return extra()


def expected_daemons(instance_dir):
    """The daemon pids an instance folder accounts for: haproxy's master and workers."""
    pid = haproxy_pid(instance_dir)
    if pid is None or pid_gone(pid):
        return set()
    try:
        return {pid} | {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def describe_daemons(api):
    found = []
    for process in daemons_under(api.state_dir):
        try:
            found.append((process.pid, process.ppid(), " ".join(process.cmdline())))
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory, pki):  # noqa: F811
    # 50 writers truly at once: the appliance-wide cap on concurrent changes
    # (4 by default, tests/e2e/test_edge.py) would queue them and test less.
    api = start_site(str(tmp_path_factory.mktemp("concurrency-site")), pki,
                     api_settings={"limits": {"concurrent_changes": "64"}})
    try:
        yield api
    finally:
        stop_site(api)


def test_fifty_requests_on_one_instance(site):
    api = site
    instance = str(uuid.uuid4())
    instance_dir = os.path.join(api.instances_dir, instance)
    base = "/instances/" + instance
    port = free_port()
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    assert not daemons_under(api.state_dir)
    figures.add("concurrent_writers", CONCURRENT)
    templates, bundles = set(), set()  # every upload so far

    try:
        for round_number in range(ROUNDS):
            one_round(api, instance, port, round_number, seed, rng, templates, bundles)
    finally:
        final = api.delete(base)
    assert final.status in (200, 404), final
    assert not os.path.exists(instance_dir)
    leftovers = orphans(api, instances=[instance])
    figures.add("orphan_daemons", len(leftovers))
    assert not leftovers, describe_daemons(api)
    assert instance not in api.instances()
    assert not accepts("127.0.0.1", port)
    print(*ROUND_LOG, sep="\n")


def one_round(api, instance, port, round_number, seed, rng, templates, bundles):
    """50 requests at once on instance, then every check on what they left."""
    instance_dir = os.path.join(api.instances_dir, instance)
    base = "/instances/" + instance
    paths = {"haproxy": base + "/haproxy", "certificate": base + "/certificates/" + CERT_NAME,
             "instances": "/instances", "service_status": "/service_status",
             "instance": base}
    where = "round %d (seed %d)" % (round_number, seed)
    plan = []
    fresh_bundles = listener_bundles(COUNTS["PUT", "certificate"])
    for method, what, count in MIX:
        for n in range(count):
            tag = "r%d-%s-%s-%d" % (round_number, method, what, n)
            content = None
            if (method, what) == ("PUT", "haproxy"):
                content = haproxy_template(port, tag).encode()
                templates.add(content)
            elif (method, what) == ("PUT", "certificate"):
                content = fresh_bundles[n]
                bundles.add(content)
            upload = api.upload_file(content) if content else None
            plan.append((tag, method, what, content, upload, rng.uniform(0, SPREAD)))
    rng.shuffle(plan)

    def job(tag, method, what, content, upload, delay):
        def run():
            time.sleep(delay)
            return Outcome(tag, method, what, content,
                           *_run(api, method, paths[what], upload, tag))
        return run
    watcher = LockWatcher()
    watcher.start()
    try:
        outcomes = run_concurrently([job(*entry) for entry in plan])
    finally:
        watcher.stop()
    writes = [o for o in outcomes if o.succeeded_write]
    ROUND_LOG.append("%s: %d in flight at most, %d waiting on the lock at most, "
                     "%d/%d successful writes seen holding it; %s" % (
                         where, peak_in_flight(outcomes), watcher.peak_waiters,
                         len([w for w in writes if w.tag in watcher.last_held]),
                         len(writes), sorted(collections.Counter(
                             (o.method, o.what, o.status) for o in outcomes).items())))

    # Every answer: a contract code, never a 500.
    errors = [o for o in outcomes if o.status == 500]
    figures.add("server_errors", len(errors))
    assert not errors, (where, errors)
    for outcome in outcomes:
        assert outcome.reply.returncode == 0, (where, outcome)
        assert outcome.status in ALLOWED[outcome.method, outcome.what], (where, outcome)
        # Valid uploads on an appliance with the port to itself are never refused.
        if outcome.method == "PUT":
            assert outcome.status == 201, (where, outcome)

    problems = check_reads(outcomes, templates, bundles, where)
    problems += check_files(instance_dir, templates, bundles, where)
    problems += check_last_writer(instance_dir, outcomes, watcher, where)
    problems += check_daemon(api, instance, instance_dir, port, where)
    assert not problems, (problems, describe_daemons(api), ROUND_LOG)


def peak_in_flight(outcomes):
    events = sorted([(o.start, 1) for o in outcomes] + [(o.end, -1) for o in outcomes])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def check_reads(outcomes, templates, bundles, where):
    """A GET saw a whole upload, never a part of one or a mix of two."""
    problems = []
    for outcome in outcomes:
        if outcome.method == "GET" and outcome.status == 200:
            body = outcome.reply.body.encode()
            if (outcome.what == "haproxy" and body not in templates) or \
                    (outcome.what == "certificate" and body not in
                     {served_certificate(bundle) for bundle in bundles}):
                problems.append((where, "torn read", outcome))
    figures.add("files_corrupted", len(problems))
    return problems


def check_files(instance_dir, templates, bundles, where):
    """Each stored file is exactly one of the uploads; no temporary is left."""
    problems = []
    template = read_bytes(os.path.join(instance_dir, "haproxy.cfg"))
    rendered = read_bytes(os.path.join(instance_dir, "haproxy.rendered.cfg"))
    certificate = read_bytes(os.path.join(instance_dir, "certificates", CERT_NAME))
    if template is not None and template not in templates:
        problems.append((where, "haproxy.cfg is none of the templates", template[:300]))
    if template is not None and rendered != render(template.decode(), instance_dir).encode():
        problems.append((where, "haproxy.rendered.cfg does not match haproxy.cfg", rendered))
    if template is None and rendered is not None:
        problems.append((where, "haproxy.rendered.cfg without haproxy.cfg", rendered))
    if certificate is not None and certificate not in bundles:
        problems.append((where, "the certificate is none of the uploads", certificate[:300]))
    for temporary in leftover_temporaries(instance_dir):
        problems.append((where, "temporary file left", temporary))
    figures.add("files_corrupted", len(problems))
    return problems


def possibly_last(writes):
    """The writes that may have been the last one by the clock alone: no other
    write started after they ended (a request that starts after another's answer
    locks after it)."""
    return [w for w in writes if not any(other.start > w.end for other in writes)]


def last_writes(writes, watcher):
    """The writes that may have been last: the one seen releasing the lock last,
    and any write the watcher never saw hold it (too short for a poll) that may
    have been last by the clock."""
    seen = [w for w in writes if w.tag in watcher.last_held]
    unseen = [w for w in writes if w.tag not in watcher.last_held]
    candidates = [w for w in possibly_last(writes) if w in unseen]
    if seen:
        candidates.append(max(seen, key=lambda w: watcher.last_held[w.tag]))
    return candidates


def check_last_writer(instance_dir, outcomes, watcher, where):
    """The stored state is the outcome of the last successful write: its upload,
    or no file after a DELETE. (Failed writes change nothing; there are none here.)"""
    problems = []
    succeeded = [o for o in outcomes if o.succeeded_write]
    for what, path, writers in (
            ("haproxy", os.path.join(instance_dir, "haproxy.cfg"), ("haproxy", "instance")),
            ("certificate", os.path.join(instance_dir, "certificates", CERT_NAME),
             ("certificate", "instance"))):
        writes = [o for o in succeeded if o.what in writers]
        if not writes:
            continue
        stored = read_bytes(path)
        candidates = last_writes(writes, watcher)
        if not any(w.content == stored for w in candidates):
            made_by = [w for w in writes if w.content == stored]
            order = sorted((t, tag) for tag, t in watcher.last_held.items())
            problems.append((where, "%s is not what the last write made" % what,
                             "stored by %r" % made_by, "candidates %r" % candidates,
                             "lock releases %r" % order))
    return problems


def check_daemon(api, instance, instance_dir, port, where):
    """A stored haproxy config runs in a live haproxy that serves it; nothing else runs."""
    problems = []
    template = read_bytes(os.path.join(instance_dir, "haproxy.cfg"))
    status = api.service_status()
    if template is not None:
        pid = haproxy_pid(instance_dir)
        expected_lines = ["%-52s%s" % (instance, "OK"),
                          "  %-17srunning (pid %s)" % ("haproxy", pid)]
        lines = status.splitlines()
        if not all(line in lines for line in expected_lines):
            problems.append((where, "/service_status does not show haproxy running", status))
        wanted = served_string(template)

        def serves():
            try:
                return http_get(port, timeout=3)[2] == wanted
            except OSError:
                return False
        if not eventually(serves, 5):
            problems.append((where, "the frontend does not serve %r" % wanted,
                             _safe_get(port)))
    else:
        lines = status.splitlines()
        block = lines[lines.index(next(l for l in lines if l.startswith(instance))) + 1:] \
            if any(l.startswith(instance) for l in lines) else []
        for line in block:
            if not line.startswith("  "):
                break
            if "haproxy" in line:
                problems.append((where, "haproxy shows for an instance without config", status))
        if not eventually(lambda: not accepts("127.0.0.1", port), 5):
            problems.append((where, "the frontend still answers without a config"))
    leftovers = orphans(api, lambda: expected_daemons(instance_dir), [instance])
    figures.add("orphan_daemons", len(leftovers))
    for process in leftovers:
        problems.append((where, "orphan daemon", process.pid, _cmdline(process)))
    return problems


def _safe_get(port):
    try:
        return http_get(port, timeout=3)
    except OSError as error:
        return repr(error)


def _cmdline(process):
    try:
        return process.cmdline()
    except psutil.Error:
        return "(gone)"


def test_fifty_instances_at_once(site):
    api = site
    instances = [str(uuid.uuid4()) for _ in range(CONCURRENT)]
    ports = set()
    while len(ports) < CONCURRENT:
        ports.add(free_port())
    ports = sorted(ports)
    uploads = [api.upload_file(haproxy_template(port, "i%d" % n)) for n, port in enumerate(ports)]
    figures.add("concurrent_writers", CONCURRENT)

    def put(n):
        return lambda: _run(api, "PUT", "/instances/%s/haproxy" % instances[n], uploads[n])[0]
    replies = run_concurrently([put(n) for n in range(CONCURRENT)])
    figures.add("server_errors", sum(r.status == 500 for r in replies))
    bad = [(n, r) for n, r in enumerate(replies) if r.status != 201]
    assert not bad, bad
    for n, reply in enumerate(replies):
        assert reply.lines[-1].startswith(
            "haproxy daemon for %s started (pid " % instances[n]), reply
    assert set(instances) <= set(api.instances())
    status = api.service_status().splitlines()
    for instance in instances:
        assert "%-52s%s" % (instance, "OK") in status
    for n, port in enumerate(ports):
        assert http_get(port)[2] == b"i%d" % n
    masters = {haproxy_pid(os.path.join(api.instances_dir, i)) for i in instances}
    assert len(masters) == CONCURRENT and None not in masters
    assert masters <= {p.pid for p in daemons_under(api.state_dir)}

    def delete(n):
        return lambda: _run(api, "DELETE", "/instances/" + instances[n])[0]
    replies = run_concurrently([delete(n) for n in range(CONCURRENT)])
    figures.add("server_errors", sum(r.status == 500 for r in replies))
    bad = [(n, r) for n, r in enumerate(replies)
           if r.status != 200 or r.lines != ["OK", "haproxy daemon %s killed." % instances[n]]]
    assert not bad, bad

    leftovers = orphans(api, instances=instances)
    figures.add("orphan_daemons", len(leftovers))
    assert not leftovers, describe_daemons(api)
    assert not set(instances) & set(api.instances())
    assert not [i for i in instances if os.path.exists(os.path.join(api.instances_dir, i))]
    assert not [i for i in instances if i in api.service_status()]
    for port in ports:
        assert not accepts("127.0.0.1", port, timeout=0.2)


# --- what the next request under the lock sees of a haproxy just reloaded ----------------

RELOADS = figures.scaled(30, 100)


def test_haproxy_seen_running_right_after_each_reload(tmp_path):
    """The window the 50-writer test fell into now and then (an orphaned second
    master), aimed at directly: once a reload has succeeded, Daemon.process() (what
    the next request under the lock asks) must find the master every time. haproxy's
    master re-executes itself right after "Loading success."; meanwhile its
    /proc/<pid>/cmdline reads empty for a few milliseconds."""
    from appliance_api import config as config_module
    from appliance_api.layout import Instance
    from appliance_api.system.daemons import daemon_for

    config = config_module.parse("[paths]\nstate_dir = %s\n[network]\nmanage = no\n"
                                 "[daemons]\nstop_timeout = 2\n" % tmp_path)
    instance = Instance(str(tmp_path), str(uuid.uuid4()))
    os.makedirs(instance.dir)
    with open(instance.rendered("haproxy"), "w") as file:
        file.write(render(haproxy_template(free_port(), "reloads"), instance.dir))
    haproxy = daemon_for("haproxy", instance, config)
    lines, unseen = [], []
    try:
        master = int(haproxy.apply().rsplit("pid ", 1)[1].rstrip(")"))
        for reload_number in range(RELOADS):
            with open(haproxy.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                reload = threading.Thread(target=lambda: lines.append(haproxy.apply()))
                reload.start()
                # From the moment haproxy says "Loading success." (the reload may
                # notice it at once and the next request take the lock) for 50 ms.
                text, deadline = b"", time.monotonic() + 30
                while b"Loading success." not in text and reload.is_alive() \
                        and time.monotonic() < deadline:
                    text += log.read()
                success_at = time.monotonic()
                while time.monotonic() < success_at + 0.05:
                    if haproxy.process() is None:
                        unseen.append(reload_number)
                        break
            reload.join(30)
            if unseen:
                break
    finally:
        haproxy.stop()
        for leftover in daemons_under(str(tmp_path)):
            leftover.kill()
    assert lines == [haproxy._message("reloaded", master)] * len(lines)
    assert not unseen, "haproxy seen as not running right after reload %d" % unseen[0]
