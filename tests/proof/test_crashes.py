"""Crashes through lighttpd (issue 5): the API script killed with SIGKILL in the
middle of a PUT, and daemons killed from outside.

A request killed mid-write must leave each stored file as it was or as the
request wanted it, never a mix; the instance's lock dies with the process, so the
next request goes through; the killed request's temporary file is swept by the
next request that takes the lock.

Two lighttpd sites share one state folder: "paused" sleeps 1.5 s between writing
each temporary file and renaming it into place ([testing] pause_before_rename),
the window the kills aim at; "fast" sets up, checks and recovers.
"""
import contextlib
import os
import signal
import subprocess
import time
import uuid

import psutil
import pytest

from e2e.conftest import pki  # noqa: F401  (session fixture)
from e2e.helpers import (CURL_TIMEOUT, WRITE_OUT, Reply, accepts, daemons_under, eventually,
                         free_port, http_get, pid_gone, served_certificate)

from . import figures
from .lighttpd_site import (haproxy_template, cgi_processes, leftover_temporaries, listener_bundles, read_bytes,
                            render, start_site, stop_site)

TRIALS = figures.scaled(3, 20)  # per kind of upload
PAUSE = 1.5
CERT_NAME = "localhost.pem"


def page(tag):
    return ("HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\n"
            "sorry page %s\n" % tag).encode()


@contextlib.contextmanager
def site_pair(tmp_path_factory, pki, name, pause=PAUSE):  # noqa: F811
    """(fast, paused): two lighttpd sites on one state folder; paused sleeps
    pause seconds before each rename."""
    state = str(tmp_path_factory.mktemp(name + "-state"))
    fast = start_site(str(tmp_path_factory.mktemp(name + "-fast")), pki, state_dir=state)
    try:
        paused = start_site(str(tmp_path_factory.mktemp(name + "-paused")), pki, state_dir=state,
                            api_settings={"testing": {"pause_before_rename": str(pause)}})
    except BaseException:
        stop_site(fast)
        raise
    try:
        yield fast, paused
    finally:
        stop_site(paused)
        stop_site(fast)


@pytest.fixture(scope="module")
def sites(tmp_path_factory, pki):  # noqa: F811
    with site_pair(tmp_path_factory, pki, "crash") as pair:
        yield pair


def start_put(api, path, data):
    """curl -X PUT in the background; its Popen."""
    argv = ["curl", "--noproxy", "*", "--globoff", "--max-time", str(CURL_TIMEOUT), "-s", "-S",
            "--cacert", api.ca, "-E", api.client_cert, "-w", WRITE_OUT,
            "-X", "PUT", "-T", api.upload_file(data), api.url(path)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def kill_in_window(api, client, directory, name, data, timeout=15):
    """Find the CGI process serving client's request, wait until it sleeps between
    writing .<name>.<pid>.tmp (all of data) and renaming it, SIGKILL it.
    Returns (the temporary's path, what the client got)."""
    deadline = time.monotonic() + timeout
    while True:
        found = cgi_processes(api.process.pid)
        assert len(found) <= 1, found  # one request at a time on the paused site
        if found:
            cgi = found[0]
            break
        assert client.poll() is None, "the request ended before its CGI process was seen"
        assert time.monotonic() < deadline, "no CGI process appeared"
        time.sleep(0.01)
    temporary = os.path.join(directory, ".%s.%d.tmp" % (name, cgi.pid))
    while read_bytes(temporary) != data:
        assert time.monotonic() < deadline, "never wrote %s" % temporary
        assert cgi.is_running(), "the CGI process ended before its window"
        time.sleep(0.01)
    time.sleep(0.2)  # inside the pause: written, fsynced, not yet renamed
    cgi.send_signal(signal.SIGKILL)
    stdout, stderr = client.communicate(timeout=CURL_TIMEOUT + 5)
    assert pid_gone(cgi.pid) or eventually(lambda: pid_gone(cgi.pid), 5)
    return temporary, Reply(subprocess.CompletedProcess(client.args, client.returncode,
                                                        stdout, stderr))


def assert_not_success(reply):
    """The killed request never reports success (lighttpd answers for the dead script)."""
    assert reply.status != 201, reply
    assert "OK" not in reply.body.splitlines()[:1], reply


def assert_swept(instance_dir):
    assert leftover_temporaries(instance_dir) == []


# --- SIGKILL of the API script in the middle of a PUT -----------------------------------

def test_kill_mid_put_custom503(sites):
    fast, paused = sites
    instance = str(uuid.uuid4())
    instance_dir = os.path.join(fast.instances_dir, instance)
    path = "/instances/%s/custom503" % instance
    stored = os.path.join(instance_dir, "custom503.http")
    for trial in range(TRIALS):
        # Every other trial starts from nothing: the killed PUT would have made the instance.
        old = page("old-%d" % trial) if trial % 2 else None
        if old:
            assert fast.put(path, old).status == 201
        new = page("new-%d" % trial)
        temporary, reply = kill_in_window(paused, start_put(paused, path, new), instance_dir,
                                          "custom503.http", new)
        figures.add("crash_trials")
        assert_not_success(reply)
        assert os.path.exists(temporary)  # killed inside the window, before the rename
        assert read_bytes(stored) == old, "trial %d" % trial
        if old is None:
            figures.add("files_corrupted", int(read_bytes(stored) is not None))
            assert fast.get("/instances/" + instance).status == 404
            # The next locked request: nothing there, and the leftovers go with the folder.
            assert fast.delete("/instances/" + instance).status == 404
            assert not os.path.exists(instance_dir)
        else:
            assert fast.get(path).body.encode() == old
            newer = page("newer-%d" % trial)
            reply = fast.put(path, newer)  # the lock died with the killed process
            assert reply.status == 201, reply
            assert_swept(instance_dir)
            assert read_bytes(stored) == newer
            assert fast.delete("/instances/" + instance).status == 200
    assert not os.path.exists(instance_dir)


def test_kill_mid_put_certificate(sites):
    fast, paused = sites
    instance = str(uuid.uuid4())
    instance_dir = os.path.join(fast.instances_dir, instance)
    path = "/instances/%s/certificates/%s" % (instance, CERT_NAME)
    stored = os.path.join(instance_dir, "certificates", CERT_NAME)
    bundles = listener_bundles(TRIALS * 3)
    for trial in range(TRIALS):
        old, new, newer = bundles[3 * trial:3 * trial + 3]
        if trial % 2:
            old = None
        else:
            assert fast.put(path, old).status == 201
        temporary, reply = kill_in_window(paused, start_put(paused, path, new),
                                          os.path.dirname(stored), CERT_NAME, new)
        figures.add("crash_trials")
        assert_not_success(reply)
        assert os.path.exists(temporary)
        ok = read_bytes(stored) == old
        figures.add("files_corrupted", int(not ok))
        assert ok, "trial %d" % trial
        if old is not None:
            assert os.stat(stored).st_mode & 0o777 == 0o600
            assert fast.get(path).body.encode() == served_certificate(old)
        else:
            assert fast.get(path).status == 404
        # No daemon runs here: none can be behind, none is named as such.
        assert not os.path.exists(os.path.join(instance_dir, "reload.pending"))
        reply = fast.put(path, newer)  # the next locked request goes through...
        assert reply.status == 201, reply
        assert_swept(instance_dir)  # ...and sweeps the killed request's temporary
        assert read_bytes(stored) == newer
        assert fast.delete("/instances/" + instance).status == 200
    assert not os.path.exists(instance_dir)


# The three files a haproxy PUT writes, in order, each with its own pause:
# (temporary's base name, what is written, the stored files already replaced)
HAPROXY_WINDOWS = [
    (".haproxy.candidate.tmp", "rendered", ()),   # the copy haproxy -c checks
    ("haproxy.rendered.cfg", "rendered", ()),
    ("haproxy.cfg", "template", ("rendered",)),
]


def test_kill_mid_put_haproxy(sites):
    fast, paused = sites
    instance = str(uuid.uuid4())
    instance_dir = os.path.join(fast.instances_dir, instance)
    path = "/instances/%s/haproxy" % instance
    template_path = os.path.join(instance_dir, "haproxy.cfg")
    rendered_path = os.path.join(instance_dir, "haproxy.rendered.cfg")
    port = free_port()
    old = haproxy_template(port, "old")
    reply = fast.put(path, old)
    assert reply.status == 201, reply
    for trial in range(TRIALS):
        name, kind, replaced = HAPROXY_WINDOWS[trial % len(HAPROXY_WINDOWS)]
        new = haproxy_template(port, "new-%d" % trial)
        texts = {"template": new, "rendered": render(new, instance_dir)}
        master = fast.service_pid(instance, "haproxy")
        temporary, reply = kill_in_window(paused, start_put(paused, path, new), instance_dir,
                                          name, texts[kind].encode())
        figures.add("crash_trials")
        assert_not_success(reply)
        assert os.path.exists(temporary)
        # Each file is the old one or the new one, never a mix.
        template, rendered = read_bytes(template_path), read_bytes(rendered_path)
        expected_template = new if "template" in replaced else old
        expected_rendered = render(new if "rendered" in replaced else old, instance_dir)
        bad = int(template != expected_template.encode()) + \
            int(rendered != expected_rendered.encode())
        figures.add("files_corrupted", bad)
        assert not bad, (trial, name, template, rendered)
        # The daemon was never told: the same master still serves the old config.
        assert fast.service_pid(instance, "haproxy") == master
        assert http_get(port)[2] == old.split("string ")[1].strip().encode()
        assert fast.get(path).body == old

        # The next request takes the lock (it died with the process) and sweeps.
        newer = haproxy_template(port, "newer-%d" % trial)
        reply = fast.put(path, newer)
        assert reply.status == 201, reply
        assert reply.lines[-1] == "haproxy daemon for %s reloaded (pid %d)" % (instance, master)
        assert_swept(instance_dir)
        assert read_bytes(template_path) == newer.encode()
        assert read_bytes(rendered_path) == render(newer, instance_dir).encode()
        assert eventually(lambda: http_get(port)[2] == b"newer-%d" % trial, 5)
        old = newer
    reply = fast.delete("/instances/" + instance)
    assert reply.status == 200, reply
    assert eventually(lambda: not daemons_under(fast.state_dir), 5)


def test_kill_between_the_two_renames_of_a_haproxy_put(sites):
    """A PUT killed after renaming the rendered config but before the template leaves
    a new rendered file beside the old template: the next reload (for a certificate
    or 503-page upload, as a controller would send) must run what GET shows."""
    fast, paused = sites
    instance = str(uuid.uuid4())
    instance_dir = os.path.join(fast.instances_dir, instance)
    path = "/instances/%s/haproxy" % instance
    port = free_port()
    old, new = haproxy_template(port, "old"), haproxy_template(port, "killed")
    try:
        assert fast.put(path, old).status == 201
        kill_in_window(paused, start_put(paused, path, new), instance_dir, "haproxy.cfg",
                       new.encode())
        figures.add("crash_trials")
        # An upload that reloads the running haproxy, as a controller would send.
        reply = fast.put("/instances/%s/custom503" % instance, page("x"))
        assert reply.status == 201, reply
        assert_swept(instance_dir)
        assert fast.get(path).body == old
        # What runs must be what GET shows.
        assert eventually(lambda: http_get(port)[2] == b"old", 3), http_get(port)
        assert read_bytes(os.path.join(instance_dir, "haproxy.rendered.cfg")) == \
            render(old, instance_dir).encode()
    finally:
        fast.delete("/instances/" + instance)


# --- lighttpd stopped in the middle of a PUT -------------------------------------------

# 3 s before each of a haproxy PUT's three renames: 9 s, past lighttpd's
# default graceful stop (8 s), within the 30 s conf/lighttpd.conf gives it.
@pytest.mark.parametrize("stop_signal, pause", [(signal.SIGINT, 3), (signal.SIGTERM, PAUSE)],
                         ids=["SIGINT", "SIGTERM"])
def test_lighttpd_stopped_mid_put_the_change_still_completes(tmp_path_factory, pki,  # noqa: F811
                                                            stop_signal, pause):
    """SIGINT is what `systemctl stop` and `restart` send lighttpd (the drop-in's
    KillSignal): its graceful stop lets the PUT finish and answer. SIGTERM stops
    lighttpd at once, and it sends its CGI processes SIGTERM: the change still
    finishes (system/signals.py), then its process ends. Either way the new
    config is stored and runs, in the same haproxy master."""
    with site_pair(tmp_path_factory, pki, "stop", pause) as (fast, paused):
        instance = str(uuid.uuid4())
        try:
            stop_mid_put(fast, paused, instance, stop_signal)
        finally:
            fast.delete("/instances/" + instance)


def stop_mid_put(fast, paused, instance, stop_signal):
    instance_dir = os.path.join(fast.instances_dir, instance)
    path = "/instances/%s/haproxy" % instance
    port = free_port()
    old, new = haproxy_template(port, "old"), haproxy_template(port, "new")
    assert fast.put(path, old).status == 201
    master = fast.service_pid(instance, "haproxy")
    client = start_put(paused, path, new)
    assert eventually(lambda: cgi_processes(paused.process.pid), 10)
    cgi = cgi_processes(paused.process.pid)[0]
    # Its first temporary is written under the instance's lock: from then on
    # a SIGTERM waits for the change. Nothing is renamed yet.
    assert eventually(lambda: leftover_temporaries(instance_dir), 10)
    assert read_bytes(os.path.join(instance_dir, "haproxy.cfg")) == old.encode()
    paused.process.send_signal(stop_signal)
    stdout, stderr = client.communicate(timeout=CURL_TIMEOUT + 5)
    reply = Reply(subprocess.CompletedProcess(client.args, client.returncode, stdout, stderr))
    if stop_signal == signal.SIGINT:
        assert reply.status == 201, reply
    else:
        assert_not_success(reply)
    assert eventually(lambda: pid_gone(cgi.pid), 20), "the CGI process never ended"
    figures.add("crash_trials")
    assert read_bytes(os.path.join(instance_dir, "haproxy.cfg")) == new.encode()
    assert read_bytes(os.path.join(instance_dir, "haproxy.rendered.cfg")) == \
        render(new, instance_dir).encode()
    assert fast.service_pid(instance, "haproxy") == master
    assert eventually(lambda: http_get(port)[2] == b"new", 5), http_get(port)
    assert_swept(instance_dir)


# --- daemons killed from outside ----------------------------------------------------------

def stunnel_template(port, haproxy_port):
    return ("[tls]\naccept = {MYIP}:%d\nconnect = {MYIP}:%d\n"
            "cert = {INSTANCE_DIR}/certificates/%s\n" % (port, haproxy_port, CERT_NAME))


def kill_daemon(pid):
    """SIGKILL a daemon and its children (haproxy's master and workers)."""
    process = psutil.Process(pid)
    victims = [process] + process.children(recursive=True)
    for victim in victims:
        victim.send_signal(signal.SIGKILL)
    for victim in victims:
        assert eventually(lambda: pid_gone(victim.pid), 5), victim


def status_block(api, instance):
    lines = api.service_status().splitlines()
    start = lines.index(next(l for l in lines if l.startswith(instance)))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


def started_pid(line, service, instance):
    prefix = "%s daemon for %s started (pid " % (service, instance)
    assert line.startswith(prefix) and line.endswith(")"), line
    return int(line[len(prefix):-1])


def test_daemons_killed_from_outside(sites):
    fast, _ = sites
    instance = str(uuid.uuid4())
    base = "/instances/" + instance
    port, tls_port = free_port(), free_port()
    template = haproxy_template(port, "alive")
    try:
        reply = fast.put(base + "/haproxy", template)
        assert reply.status == 201, reply
        haproxy = started_pid(reply.lines[-1], "haproxy", instance)

        # The only service dies: stopped, the instance DOWN; the next PUT starts it.
        kill_daemon(haproxy)
        assert status_block(fast, instance) == ["%-52sDOWN" % instance,
                                                "  %-17sstopped" % "haproxy"]
        assert not accepts("127.0.0.1", port)
        reply = fast.put(base + "/haproxy", template)
        assert reply.status == 201, reply
        haproxy = started_pid(reply.lines[-1], "haproxy", instance)
        assert http_get(port)[2] == b"alive"

        # Two services: stunnel in front of haproxy.
        assert fast.put(base + "/certificates/" + CERT_NAME,
                        listener_bundles(1)[0]).status == 201
        reply = fast.put(base + "/stunnel", stunnel_template(tls_port, port))
        assert reply.status == 201, reply
        stunnel = started_pid(reply.lines[-1], "stunnel", instance)
        running = "  %-17srunning (pid %d)"
        assert status_block(fast, instance) == ["%-52sOK" % instance,
                                                running % ("haproxy", haproxy),
                                                running % ("stunnel", stunnel)]

        # stunnel dies: DEGRADED; the next stunnel PUT starts it again.
        kill_daemon(stunnel)
        assert status_block(fast, instance) == ["%-52sDEGRADED" % instance,
                                                running % ("haproxy", haproxy),
                                                "  %-17sstopped" % "stunnel"]
        reply = fast.put(base + "/stunnel", stunnel_template(tls_port, port))
        assert reply.status == 201, reply
        stunnel = started_pid(reply.lines[-1], "stunnel", instance)
        assert eventually(lambda: accepts("127.0.0.1", tls_port))

        # haproxy dies under a live stunnel: DEGRADED; the next haproxy PUT starts it.
        kill_daemon(haproxy)
        assert status_block(fast, instance) == ["%-52sDEGRADED" % instance,
                                                "  %-17sstopped" % "haproxy",
                                                running % ("stunnel", stunnel)]
        reply = fast.put(base + "/haproxy", template)
        assert reply.status == 201, reply
        haproxy = started_pid(reply.lines[-1], "haproxy", instance)
        assert status_block(fast, instance) == ["%-52sOK" % instance,
                                                running % ("haproxy", haproxy),
                                                running % ("stunnel", stunnel)]
        assert http_get(port)[2] == b"alive"

        reply = fast.delete(base)
        assert reply.status == 200, reply
        assert reply.lines == ["OK", "stunnel daemon %s killed." % instance,
                               "haproxy daemon %s killed." % instance]
    finally:
        fast.delete(base)
    leftovers = [p for p in daemons_under(fast.state_dir) if instance in " ".join(p.cmdline())]
    figures.add("orphan_daemons", len(leftovers))
    assert not leftovers
