"""Faults, in process (issue 5, "Proof under fire").

- The state folder turns read-only (a read-only bind mount) or full (a small
  tmpfs, filled up) while an instance's haproxy runs: every write answers 500
  with a one-line reason, leaves no partial or temporary file, changes no stored
  file, and the daemon keeps running and answering; reads still answer.
- haproxy missing, crashing or hanging: 500 with the reason when its checker
  cannot run, 409 when the daemon will not start (it is rolled back); nothing
  is left behind either way.
- The CGI run without lighttpd's verified-client environment refuses (403).
- Secrets: a private key never shows in an answer (other than GET of its own
  file) or in a log, whatever is uploaded.

Expected 500s are not counted as server errors; unexpected ones are.
"""
import contextlib
import hashlib
import os
import socket
import ssl
import subprocess
import time
import uuid

import pytest

from appliance_api.system.daemons import daemon_for

from . import figures
from .test_hostile_input import CERT_NAME, CN, PAGE, World, free_port, reap_orphans

CGI = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "cgi-bin", "appliance-api"))

HAPROXY = """global
    maxconn 64
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend web
    bind {MYIP}:%(port)d
    errorfile 503 {INSTANCE_DIR}/custom503.http
    default_backend none
backend none
"""

NEW_PAGE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nnew page\n"


def answer_ok(response, status):
    """Count an unexpected 500 (a 500 the test did not ask for) as a server error."""
    if response.status_int == 500 and status != 500:
        figures.add("server_errors")
    assert response.status_int == status, response


def bundle_for(common_name, key_type="ec", ca=None, **leaf):
    """key + certificate + CA PEM for common_name; (bundle, key PEM, certificate)."""
    import datetime

    import pki
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization as s
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca_cert, ca_key = ca or pki.make_ca("faults CA")
    if key_type == "ec":
        cert, key = pki.make_leaf(ca_cert, ca_key, common_name, server=True, **leaf)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
        now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME,
                                                            common_name)]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
                .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
    bundle = (key_pem + cert.public_bytes(s.Encoding.PEM)
              + ca_cert.public_bytes(s.Encoding.PEM))
    return bundle, key_pem, key, cert


def ask(port):
    """The whole answer haproxy gives a plain request (its 503 page: no server)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def served_certificate(port):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=CN) as tls:
            return tls.getpeercert(binary_form=True)


def der(cert):
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def stored_files(state_dir):
    """{relative path: (mode, content)} of the state folder; logs and the last
    start or reload's record aside (what the daemons did, not what is stored)."""
    found = {}
    for folder, _dirs, names in os.walk(state_dir):
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith((".log", ".outcome")) or name in ("filler", "master.sock"):
                continue
            with open(path, "rb") as file:
                found[os.path.relpath(path, state_dir)] = (os.stat(path).st_mode, file.read())
    return found


def count_corrupted(before, after):
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    figures.add("files_corrupted", len(changed))
    return changed


def temporaries(state_dir):
    return [os.path.join(folder, name) for folder, _dirs, names in os.walk(state_dir)
            for name in names if name.endswith(".tmp") or ".candidate" in name]


def sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def unmount(path):
    for _ in range(50):
        if subprocess.run(["umount", path], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", path], check=True)


@contextlib.contextmanager
def read_only(path):
    """path, bind-mounted read-only onto itself for the duration."""
    sh("mount", "--bind", path, path)
    try:
        sh("mount", "-o", "remount,bind,ro", path)
        yield
    finally:
        unmount(path)


def fill(folder):
    """Write a file until the file system is full."""
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as file:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    file.write(b"\0" * size)
            except OSError as error:
                assert error.errno == 28, error  # ENOSPC


class RunningInstance:
    """An instance with a 503 page, a certificate and a haproxy started through the API."""

    def __init__(self, world):
        self.world = world
        self.id = str(uuid.uuid4())
        self.base = "/instances/" + self.id
        self.instance = world.instance(self.id)
        self.port = free_port()
        self.bundle = bundle_for(CN)[0]
        app = world.app
        answer_ok(app.put(self.base + "/custom503", PAGE), 201)
        answer_ok(app.put(self.base + "/certificates/" + CERT_NAME, self.bundle), 201)
        self.template = (HAPROXY % {"port": self.port}).encode()
        answer_ok(app.put(self.base + "/haproxy", self.template), 201)
        self.haproxy = daemon_for("haproxy", self.instance, world.config)
        self.pid = self.haproxy.process().pid
        assert ask(self.port).endswith(b"\r\n\r\nsorry\n")

    def delete(self):
        response = self.world.app.delete(self.base, expect_errors=True)
        answer_ok(response, 200)


def check_writes_fail(world, running, reason):
    """Every kind of write answers 500 naming reason, and changes nothing."""
    app = world.app
    before = stored_files(world.state_dir)
    new_bundle = bundle_for(CN)[0]
    fresh = "/instances/%s" % uuid.uuid4()
    writes = [
        (running.base + "/haproxy", (HAPROXY % {"port": free_port()}).encode()),
        (running.base + "/certificates/" + CERT_NAME, new_bundle),
        (running.base + "/certificates/other.example.test.pem",
         bundle_for("other.example.test")[0]),
        (running.base + "/custom503", NEW_PAGE),
        (fresh + "/custom503", NEW_PAGE),
        (fresh + "/haproxy", (HAPROXY % {"port": free_port()}).encode()),
    ]
    for url, body in writes:
        response = app.put(url, body, expect_errors=True)
        answer_ok(response, 500)
        assert reason in response.text, response
        assert response.text.count("\n") == 1 and "Traceback" not in response.text, response
    if reason == "Read-only file system":
        for url in (running.base + "/custom503", running.base + "/haproxy"):
            response = app.delete(url, expect_errors=True)
            answer_ok(response, 500)
            assert reason in response.text and response.text.count("\n") == 1, response
    else:
        # Removing the 503 page that the running config names fails the reload; the
        # page must come back although there is no room to write a file.
        response = app.delete(running.base + "/custom503", expect_errors=True)
        assert response.status_int in (409, 500), response

    # Reads still answer, with what was stored before.
    answer_ok(app.get("/status"), 200)
    service_status = app.get("/service_status")
    answer_ok(service_status, 200)
    assert "haproxy          running (pid %d)" % running.pid in service_status.text
    assert app.get("/instances").text == running.id + "\n"
    answer_ok(app.get(running.base), 200)
    assert app.get(running.base + "/haproxy").body == running.template
    # Its ETag is the stored bundle's (the body leaves the key out).
    assert app.get(running.base + "/certificates/" + CERT_NAME).headers["ETag"] == \
        '"%s"' % hashlib.sha256(running.bundle).hexdigest()
    assert app.get(running.base + "/custom503").body == PAGE
    answer_ok(app.get(fresh, expect_errors=True), 404)

    assert not os.path.exists(os.path.join(world.state_dir, "instances", fresh.split("/")[-1]))
    assert temporaries(world.state_dir) == []
    changed = count_corrupted(before, stored_files(world.state_dir))
    assert changed == [], "stored files changed: %r" % changed
    # The daemon is untouched: same master, still serving the old page.
    process = running.haproxy.process()
    assert process is not None and process.pid == running.pid
    assert ask(running.port).endswith(b"\r\n\r\nsorry\n")


@pytest.fixture
def world(tmp_path):
    world = World(tmp_path, daemons={"start_timeout": "5", "stop_timeout": "2"})
    yield world
    leaked = reap_orphans(world.root)
    assert leaked == [], "daemons left running: %r" % leaked


def test_read_only_state_folder(world):
    running = RunningInstance(world)
    try:
        with read_only(world.state_dir):
            check_writes_fail(world, running, "Read-only file system")
    finally:
        running.delete()
    assert not os.listdir(os.path.join(world.state_dir, "instances"))


def test_full_state_folder(world):
    sh("mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", world.state_dir)
    try:
        running = RunningInstance(world)
        try:
            fill(world.state_dir)
            check_writes_fail(world, running, "No space left on device")
        finally:
            os.unlink(os.path.join(world.state_dir, "filler"))
            running.delete()
        assert not os.listdir(os.path.join(world.state_dir, "instances"))
    finally:
        leaked = reap_orphans(world.root)  # before unmounting: a daemon would hold it busy
        unmount(world.state_dir)
    assert leaked == [], "daemons left running: %r" % leaked


# ---------------------------------------------------------------------------
# haproxy missing or broken


FAKE_HAPROXY = {
    # kind: (script, expected status, reason in the answer)
    "missing": (None, 500, "Program not found: "),
    "segfault": ("#!/bin/sh\nkill -SEGV $$\n", 500, "-c failed (exit -11)"),
    "hang": ('#!/bin/sh\nexec /usr/bin/python3 -c "import time; time.sleep(60)" "$@"\n',
             500, "Program timed out after 2s"),
    # These pass the check, then fail as a daemon: rolled back, 409 (README: "One that
    # passes but cannot start ... is rolled back ... the answer is 409").
    "segfault at start": ('#!/bin/sh\n[ "$1" = -c ] && exit 0\nkill -SEGV $$\n',
                          409, "haproxy failed to start"),
    "hang at start": ('#!/bin/sh\n[ "$1" = -c ] && exit 0\n'
                      'exec /usr/bin/python3 -c "import time; time.sleep(60)" "$@"\n',
                      409, "haproxy did not start within 2s"),
}


@pytest.mark.parametrize("kind", sorted(FAKE_HAPROXY))
def test_haproxy_missing_or_broken(tmp_path, kind):
    script, status, reason = FAKE_HAPROXY[kind]
    program = str(tmp_path / "bin" / "haproxy")
    if script is not None:
        os.makedirs(os.path.dirname(program))
        with open(program, "w") as file:
            file.write(script)
        os.chmod(program, 0o755)
    world = World(tmp_path / "world", programs={"haproxy": program},
                  daemons={"start_timeout": "2", "stop_timeout": "1"})
    try:
        app = world.app
        # A new instance: nothing may be left of it.
        fresh = str(uuid.uuid4())
        started = time.monotonic()
        response = app.put("/instances/%s/haproxy" % fresh, (HAPROXY % {"port": free_port()})
                           .encode().replace(b"    errorfile 503 {INSTANCE_DIR}/custom503.http\n",
                                             b""), expect_errors=True)
        assert time.monotonic() - started < 10
        answer_ok(response, status)
        assert reason in response.text, response
        if status == 500:
            assert response.text.count("\n") == 1, response
        assert not os.path.exists(world.instance(fresh).dir)
        # An instance that has a 503 page: it keeps it, and gets no config.
        existing = str(uuid.uuid4())
        answer_ok(app.put("/instances/%s/custom503" % existing, PAGE), 201)
        before = stored_files(world.state_dir)
        response = app.put("/instances/%s/haproxy" % existing,
                           (HAPROXY % {"port": free_port()}).encode(), expect_errors=True)
        answer_ok(response, status)
        assert reason in response.text, response
        assert count_corrupted(before, stored_files(world.state_dir)) == []
        assert temporaries(world.state_dir) == []
        answer_ok(app.get("/instances/%s/haproxy" % existing, expect_errors=True), 404)
        assert app.get("/service_status").text == existing + " " * 16 + "OK\n"
    finally:
        leaked = reap_orphans(world.root)
    assert leaked == [], "left running: %r" % leaked


# ---------------------------------------------------------------------------
# the CGI without lighttpd


def run_cgi(tmp_path, method="GET", path="/instances", body=b"", **environ):
    state_dir = tmp_path / "state"
    state_dir.mkdir(exist_ok=True)
    config = tmp_path / "appliance-api.ini"
    config.write_text("[paths]\nstate_dir = %s\n[network]\nmanage = no\n[api]\n"
                      "allowed_client_names = %s\n"
                      % (state_dir, environ.pop("allowed", "")))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "REQUEST_METHOD": method,
           "PATH_INFO": path, "SCRIPT_NAME": "/api", "QUERY_STRING": "",
           "SERVER_NAME": "localhost", "SERVER_PORT": "443", "SERVER_PROTOCOL": "HTTP/1.1",
           "GATEWAY_INTERFACE": "CGI/1.1", "REMOTE_ADDR": "127.0.0.1",
           "CONTENT_LENGTH": str(len(body)), "APPLIANCE_API_CONFIG": str(config)}
    env.update(environ)
    completed = subprocess.run([CGI], input=body, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=60)
    assert completed.returncode == 0, completed
    return completed.stdout.decode("utf-8", "replace"), str(state_dir)


@pytest.mark.parametrize("verify", [None, "NONE", "FAILED:unable to verify", "success", ""])
def test_cgi_without_a_verified_client_refuses(tmp_path, verify):
    extra = {} if verify is None else {"SSL_CLIENT_VERIFY": verify}
    output, _ = run_cgi(tmp_path, **extra)
    assert output.startswith("Status: 403"), output
    assert "Client certificate required" in output
    # A write is refused before it touches anything.
    instance_id = str(uuid.uuid4())
    output, state_dir = run_cgi(tmp_path, "PUT", "/instances/%s/custom503" % instance_id,
                                PAGE, **extra)
    assert output.startswith("Status: 403"), output
    assert not os.path.exists(os.path.join(state_dir, "instances", instance_id))


def test_cgi_with_a_verified_client_answers(tmp_path):
    output, _ = run_cgi(tmp_path, SSL_CLIENT_VERIFY="SUCCESS", SSL_CLIENT_S_DN_CN="controller")
    assert output.startswith("Status: 200"), output
    output, _ = run_cgi(tmp_path, SSL_CLIENT_VERIFY="SUCCESS", SSL_CLIENT_S_DN_CN="intruder",
                        allowed="controller")
    assert output.startswith("Status: 403") and "Client certificate not allowed" in output
    output, _ = run_cgi(tmp_path, SSL_CLIENT_VERIFY="SUCCESS", SSL_CLIENT_S_DN_CN="controller",
                        allowed="controller")
    assert output.startswith("Status: 200"), output


# ---------------------------------------------------------------------------
# secrets


def test_private_keys_never_leak(world):
    """Certificates, valid and not, go to an instance whose haproxy and stunnel use
    them; no answer but GET of the file itself, and no log, shows key material."""
    from cryptography.hazmat.primitives import serialization as s

    import pki

    app = world.app
    instance_id = str(uuid.uuid4())
    base = "/instances/" + instance_id
    url = base + "/certificates/" + CERT_NAME
    ca = pki.make_ca("secrets CA")
    first, first_key_pem, first_key, first_cert = bundle_for(CN, ca=ca)
    second, second_key_pem, _, second_cert = bundle_for(CN, ca=ca)
    rsa, rsa_key_pem, _, rsa_cert = bundle_for(CN, "rsa2048", ca=ca)
    weak, weak_key_pem, _, _ = bundle_for(CN, "rsa1024", ca=ca)
    wrong_name = bundle_for("other.example.test", ca=ca)[0]
    import datetime
    expired = bundle_for(CN, ca=ca, not_after=datetime.datetime(
        2001, 1, 1, tzinfo=datetime.timezone.utc))[0]
    secret = s.BestAvailableEncryption(b"passphrase")
    encrypted_pkcs8 = first_key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, secret)
    encrypted_legacy = first_key.private_bytes(s.Encoding.PEM, s.PrivateFormat.TraditionalOpenSSL,
                                               secret)
    first_cert_pem = first_cert.public_bytes(s.Encoding.PEM)
    keys = [first_key_pem, second_key_pem, rsa_key_pem, weak_key_pem, encrypted_pkcs8,
            encrypted_legacy, wrong_name[:wrong_name.index(b"-----BEGIN CERTIFICATE")],
            expired[:expired.index(b"-----BEGIN CERTIFICATE")]]
    key_lines = {line for key in keys for line in key.splitlines()
                 if len(line) >= 16 and not line.startswith(b"-----")}

    answers = []  # every answer that must not hold a key

    def request(method, path, body=None, status=None, keep=True):
        response = getattr(app, method)(path, body, expect_errors=True) if body is not None \
            else getattr(app, method)(path, expect_errors=True)
        if status is not None:
            answer_ok(response, status)
        elif response.status_int == 500:
            figures.add("server_errors")
        if keep:
            answers.append((method, path, response))
        return response

    request("put", url, first, 201)
    http_port, tls_port, stunnel_port = free_port(), free_port(), free_port()
    request("put", base + "/custom503", PAGE, 201)
    haproxy = (HAPROXY % {"port": http_port}).replace(
        "frontend web\n",
        "frontend web\n    bind {MYIP}:%d ssl crt {INSTANCE_DIR}/certificates/%s\n"
        % (tls_port, CERT_NAME)).encode()
    request("put", base + "/haproxy", haproxy, 201)
    stunnel = ("debug = 7\n[tls]\naccept = {MYIP}:%d\nconnect = 127.0.0.1:%d\n"
               "cert = {INSTANCE_DIR}/certificates/%s\n" % (stunnel_port, http_port, CERT_NAME))
    request("put", base + "/stunnel", stunnel.encode(), 201)
    served = {"cert": first_cert}

    uploads = [
        (second, 201, second_cert, ""),
        (rsa, 201, rsa_cert, ""),
        (rsa[:rsa.index(b"-----BEGIN CERTIFICATE")] + second[second.index(b"-----BEGIN CERT"):],
         409, None, "Certificate and key do not match"),
        (wrong_name, 409, None, "Filename does not match"),
        (expired, 409, None, "Certificate has expired"),
        (encrypted_pkcs8 + first_cert_pem, 409, None, "Private key is encrypted"),
        (encrypted_legacy + first_cert_pem, 409, None, "Private key is encrypted"),
        (first_key_pem, 409, None, "No certificate found"),
        (first_key_pem + second_key_pem + first_cert_pem, 409, None,
         "More than one private key found"),
        (first_cert_pem + first_key_pem, 409, None, "Blocks out of order"),
        (first_key_pem + b"garbage\n" + first_cert_pem, 409, None, "not a PEM key"),
        # A 1024-bit key: the daemons' OpenSSL refuses it, and so does the upload now.
        (weak, 409, None, "Key too small for the daemons' OpenSSL"),
        (first, 201, first_cert, ""),
    ]
    stored = first
    for body, status, cert, reason in uploads:
        response = request("put", url, body, status)
        assert reason in response.text, response
        if status is None:
            assert response.status_int in (201, 409), response
            if response.status_int == 409:
                assert "the previous file is back in place" in response.text, response
        if response.status_int == 201:
            stored = body
            served["cert"] = cert
        # The daemons run whatever is stored, and the file is readable by root only.
        with open(world.instance(instance_id).certificate(CERT_NAME), "rb") as file:
            on_disk = file.read()
        if on_disk != stored:
            figures.add("files_corrupted")
        assert on_disk == stored
        assert b"PRIVATE KEY" in on_disk  # for the daemons; a GET never answers it
        fetched = app.get(url)
        assert b"PRIVATE KEY" not in fetched.body
        assert fetched.headers["ETag"] == '"%s"' % hashlib.sha256(stored).hexdigest()
        assert os.stat(world.instance(instance_id).certificate(CERT_NAME)).st_mode & 0o777 == 0o600
        if served["cert"] is not None:
            assert served_certificate(stunnel_port) == der(served["cert"])
            assert served_certificate(tls_port) == der(served["cert"])
        else:  # the 1024-bit key was taken: whatever stunnel serves, it matches the file
            served_certificate(stunnel_port)

    for path in ("/status", "/service_status", "/instances", base, base + "/haproxy",
                 base + "/stunnel", base + "/custom503"):
        request("get", path, status=200)
    request("delete", url, status=409)  # in use by the configs
    request("delete", base + "/stunnel", status=200)
    request("delete", base + "/haproxy", status=200)

    instance = world.instance(instance_id)
    logs = {"haproxy.log": instance.log("haproxy"), "stunnel.log": instance.log("stunnel")}
    texts = [("%s %s" % (method.upper(), path), response.body + response.errors.encode())
             for method, path, response in answers]
    for name, path in logs.items():
        with open(path, "rb") as file:
            texts.append((name, file.read()))
    assert any(name == "stunnel.log" and b"Configuration successful" in text
               for name, text in texts), "stunnel.log is not the stunnel log"
    leaks = [(where, line) for where, text in texts for line in key_lines if line in text]
    leaks += [(where, b"PRIVATE KEY") for where, text in texts if b"PRIVATE KEY" in text]
    assert leaks == []
    request("delete", base, status=200)


# ---------------------------------------------------------------------------
# haproxy's master re-executes itself after every start and reload. Regression
# tests for what that broke (found by these tests, fixed in lib/ since):
# a quiet stunnel, a soft stop right after a start, a daemon that looked stopped.


def test_certificate_reload_under_a_quiet_stunnel(tmp_path):
    """stunnel confirms a reload with a notice; a config with a quieter debug level
    made every reload look failed (a certificate upload answered 500)."""
    world = World(tmp_path, daemons={"start_timeout": "2", "stop_timeout": "1"})
    app = world.app
    base = "/instances/%s" % uuid.uuid4()
    url = base + "/certificates/" + CERT_NAME
    answer_ok(app.put(url, bundle_for(CN)[0]), 201)
    stunnel = ("debug = 4\n[tls]\naccept = {MYIP}:%d\nconnect = 127.0.0.1:%d\n"
               "cert = {INSTANCE_DIR}/certificates/%s\n" % (free_port(), free_port(), CERT_NAME))
    try:
        answer_ok(app.put(base + "/stunnel", stunnel.encode()), 201)
        response = app.put(url, bundle_for(CN)[0], expect_errors=True)
        answer_ok(response, 201)
        assert "stunnel daemon for %s reloaded" % base.split("/")[-1] in response.text
        answer_ok(app.put(base + "/stunnel", stunnel.replace("debug = 4", "debug = daemon.err")
                          .encode()), 201)
    finally:
        app.delete(base, expect_errors=True)
        leaked = reap_orphans(world.root)
    assert leaked == []


def test_delete_right_after_a_start_is_a_soft_stop(tmp_path):
    """A SIGUSR1 sent while the master re-executes itself was lost: the DELETE
    waited out stop_timeout, then killed haproxy."""
    world = World(tmp_path, daemons={"start_timeout": "5", "stop_timeout": "1"})
    app = world.app
    url = "/instances/%s/haproxy" % uuid.uuid4()
    durations = []
    try:
        for _ in range(5):
            answer_ok(app.put(url, (HAPROXY % {"port": free_port()}).encode().replace(
                b"    errorfile 503 {INSTANCE_DIR}/custom503.http\n", b"")), 201)
            started = time.monotonic()
            answer_ok(app.delete(url), 200)
            durations.append(time.monotonic() - started)
    finally:
        leaked = reap_orphans(world.root)
    assert leaked == []
    # A soft stop of an idle haproxy takes milliseconds; a lost signal, stop_timeout.
    assert max(durations) < 0.8, durations


def test_haproxy_stays_visible_right_after_reloads(tmp_path):
    """While the master re-executed itself its cmdline read empty: a request right
    after a reload saw no daemon (a DELETE then left haproxy running, a PUT started
    a second one). Each reload here is followed at once by a request that looks."""
    world = World(tmp_path, daemons={"start_timeout": "5", "stop_timeout": "1"})
    app = world.app
    instance_id = str(uuid.uuid4())
    base = "/instances/" + instance_id
    try:
        for round_ in range(figures.scaled(5, 25)):
            answer_ok(app.put(base + "/custom503", PAGE), 201)
            answer_ok(app.put(base + "/haproxy", (HAPROXY % {"port": free_port()}).encode()), 201)
            for number in range(12):
                answer_ok(app.put(base + "/custom503", PAGE + b"%d\n" % number), 201)
                for _ in range(4):
                    status = app.get("/service_status").text
                    assert "running (pid" in status, "after reload %d: %s" % (number, status)
            answer_ok(app.put(base + "/custom503", PAGE), 201)
            response = app.delete(base)
            answer_ok(response, 200)
            assert response.text == "OK\nhaproxy daemon %s killed.\n" % instance_id
            leaked = reap_orphans(world.root)
            assert leaked == [], "round %d: %r" % (round_, leaked)
    finally:
        leaked = reap_orphans(world.root)
    assert leaked == []
