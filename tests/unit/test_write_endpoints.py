"""PUT/GET/DELETE of configs, the 503 page and certificates, in process.

haproxy's own checker really runs (it is fast); daemons that really start
are stopped by the DELETE each test ends with.
"""
import hashlib
import os
import socket

import pytest

from appliance_api import running
from appliance_api.layout import Instance

HAPROXY = """global
    maxconn 64
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend web
    bind {MYIP}:%d
    errorfile 503 {INSTANCE_DIR}/custom503.http
    default_backend none
backend none
"""
PAGE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry\n"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_put_haproxy_that_fails_the_check_is_409_and_changes_nothing(app, state_dir, instance_id):
    # Past the scan (a literal listener), refused by haproxy's own check.
    response = app.put("/instances/%s/haproxy" % instance_id,
                       b"frontend f\n    bind 127.0.0.1:%d\n    no-such-keyword\n" % free_port(),
                       expect_errors=True)
    assert response.status_int == 409
    assert response.text.startswith("Invalid configuration\n")
    assert "[ALERT]" in response.text and "no-such-keyword" in response.text
    assert ".candidate" not in response.text  # the checker's output names the uploaded file
    assert not os.path.exists(os.path.join(state_dir, "instances", instance_id))


def test_put_config_that_is_not_utf8_is_409(app, instance_id):
    response = app.put("/instances/%s/stunnel" % instance_id, b"\xff\xfe[svc]\n", expect_errors=True)
    assert response.status_int == 409
    assert response.text == "Invalid configuration\nThe configuration is not UTF-8 text\n"


def test_config_lifecycle_in_process(app, state_dir, instance_id):
    url = "/instances/%s/haproxy" % instance_id
    template = (HAPROXY % free_port()).encode()
    assert app.put("/instances/%s/custom503" % instance_id, PAGE).status_int == 201
    response = app.put(url, template)
    assert response.status_int == 201
    lines = response.text.splitlines()
    assert lines[:2] == ["OK", "Configuration file is valid"]
    assert lines[2].startswith("haproxy daemon for %s started (pid " % instance_id)
    try:
        assert app.get(url).body == template
        instance = Instance(state_dir, instance_id)
        with open(instance.rendered("haproxy")) as file:
            rendered = file.read()
        assert "{MYIP}" not in rendered and "bind 127.0.0.1:" in rendered
        assert "errorfile 503 %s/custom503.http" % os.path.abspath(instance.dir) in rendered
        response = app.put(url, template)
        assert response.text.splitlines()[2].startswith(
            "haproxy daemon for %s reloaded (pid " % instance_id)
    finally:
        response = app.delete(url)
    assert response.text == "OK\nhaproxy daemon %s killed.\n" % instance_id
    assert app.get(url, expect_errors=True).status_int == 404
    assert app.delete(url, expect_errors=True).status_int == 404
    assert app.get("/instances/" + instance_id).status_int == 200  # the 503 page is left
    assert app.delete("/instances/%s/custom503" % instance_id).text == "OK\n"
    assert not os.path.exists(os.path.join(state_dir, "instances", instance_id))


def test_stunnel_render_puts_managed_options_last_in_the_global_section(config, instance_id):
    from appliance_api.system.stunnel import Stunnel

    stunnel = Stunnel(Instance(config.state_dir, instance_id), config)
    text = stunnel.render("pid = /tmp/theirs.pid\nforeground = yes\n[tls]\naccept = {MYIP}:443\n"
                          "cert = {INSTANCE_DIR}/certificates/a.pem\n")
    head, _, tail = text.partition("[tls]")
    assert head.index("pid = /tmp/theirs.pid") < head.index("pid = %s" % stunnel.pid_file)
    assert head.rstrip().endswith("foreground = no")
    assert "accept = 127.0.0.1:443" in tail
    assert "cert = %s/certificates/a.pem" % os.path.abspath(stunnel.instance.dir) in tail


@pytest.mark.parametrize("page, status", [
    (PAGE, 201),
    (b"HTTP/1.1 503 Service Unavailable\n\n", 201),
    (b"HTTP/1.1 503\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n<html></html>", 201),
    (b"", 409),
    (b"<html>sorry</html>", 409),
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n", 409),
    (b"HTTP/1.1 503 Service Unavailable\r\nnot a header\r\n\r\nbody", 409),
    (b"HTTP/2 503\r\n\r\n", 409),
    (b"x" * 16385, 413),
])
def test_custom503_checks(app, instance_id, page, status):
    response = app.put("/instances/%s/custom503" % instance_id, page, expect_errors=True)
    assert response.status_int == status, response.text
    if status == 201:
        assert app.get("/instances/%s/custom503" % instance_id).body == page
    if status == 409:
        assert response.text.startswith("Not an HTTP response")


def test_missing_haproxy_binary_is_500_and_changes_nothing(state_dir, instance_id):
    import webtest
    from appliance_api.app import make_application

    from conftest import VERIFIED, make_config

    config = make_config(state_dir, programs={"haproxy": "/nonexistent/haproxy"})
    app = webtest.TestApp(make_application(config), extra_environ=VERIFIED)
    response = app.put("/instances/%s/haproxy" % instance_id, (HAPROXY % 1).encode(),
                       expect_errors=True)
    assert response.status_int == 500
    assert response.text == "Program not found: /nonexistent/haproxy\n"
    assert not os.path.exists(os.path.join(state_dir, "instances", instance_id))


def certificate_bundle(common_name):
    import pki
    from cryptography.hazmat.primitives import serialization

    ca, ca_key = pki.make_ca("test CA")
    cert, key = pki.make_leaf(ca, ca_key, common_name, server=True)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def test_certificate_put_get_delete(app, state_dir, instance_id):
    bundle = certificate_bundle("*.example.com")
    url = "/instances/%s/certificates/WILDCARD.example.com.pem" % instance_id
    etag = '"%s"' % hashlib.sha256(bundle).hexdigest()
    response = app.put(url, bundle)
    assert (response.status_int, response.text, response.headers["ETag"]) == (201, "OK\n", etag)
    path = Instance(state_dir, instance_id).certificate("WILDCARD.example.com.pem")
    assert os.stat(path).st_mode & 0o777 == 0o600
    response = app.get(url)
    # The certificate without its key; the ETag still the stored file's.
    assert response.body == bundle[bundle.index(b"-----BEGIN CERTIFICATE"):]
    assert response.content_type == "application/x-pem-file"
    assert response.headers["ETag"] == etag
    assert app.put(url, bundle).status_int == 201  # identical content: still 201
    assert app.delete(url).text == "OK\n"
    assert app.get(url, expect_errors=True).status_int == 404
    assert app.delete(url, expect_errors=True).status_int == 404
    assert app.get("/instances/" + instance_id, expect_errors=True).status_int == 404


def test_rejected_certificate_leaves_the_stored_one_unchanged(app, state_dir, instance_id):
    bundle = certificate_bundle("www.example.com")
    url = "/instances/%s/certificates/www.example.com.pem" % instance_id
    app.put(url, bundle)
    other = certificate_bundle("www.example.com")
    mismatched = other[:other.index(b"-----BEGIN CERTIFICATE")] + bundle[bundle.index(
        b"-----BEGIN CERTIFICATE"):]
    response = app.put(url, mismatched, expect_errors=True)
    assert (response.status_int, response.text) == (409, "Certificate and key do not match\n")
    response = app.put(url.replace("www.", "mail."), bundle, expect_errors=True)
    assert response.status_int == 409
    assert response.text == ("Filename does not match the certificate's common name "
                             "(expected www.example.com.pem)\n")
    assert app.head(url).headers["ETag"] == '"%s"' % hashlib.sha256(bundle).hexdigest()
    assert app.put(url, b"x" * 262145, expect_errors=True).status_int == 413


def test_certificate_in_use_by_a_config_cannot_be_deleted(app, state_dir, instance_id):
    bundle = certificate_bundle("localhost")
    base = "/instances/%s" % instance_id
    app.put(base + "/certificates/localhost.pem", bundle)
    instance = Instance(state_dir, instance_id)
    # The config's file, as PUT stunnel would leave it (no daemon needed to name a file).
    for path in (instance.template("stunnel"), instance.rendered("stunnel")):
        with open(path, "w") as file:
            file.write("[tls]\ncert = %s\n" % os.path.abspath(instance.certificate("localhost.pem")))
    response = app.delete(base + "/certificates/localhost.pem", expect_errors=True)
    assert (response.status_int, response.text) == (
        409, "Certificate is in use by the stunnel configuration\n")
    assert os.path.exists(instance.certificate("localhost.pem"))


@pytest.mark.parametrize("debug, managed", [
    ("", False), ("debug = 7\n", False), ("debug = notice\n", False),
    # (stunnel has no comment after a value: "debug = warning ; x" is an
    # illegal level to it, refused at start, so never stored.)
    ("debug = 4\n", True), ("debug = daemon.err\n", True), ("  Debug = warning\n", True)])
def test_stunnel_render_keeps_the_reload_notice_logged(config, instance_id, debug, managed):
    from appliance_api.system.stunnel import Stunnel

    text = Stunnel(Instance(config.state_dir, instance_id), config).render(
        debug + "[tls]\naccept = 443\n")
    assert ("debug = 5\n" in text.partition("[tls]")[0]) is managed


def test_haproxy_config_with_daemon_and_quiet_still_starts_and_reloads(app, instance_id):
    url = "/instances/%s/haproxy" % instance_id
    template = (HAPROXY % free_port()).replace("maxconn 64", "maxconn 64\n    daemon\n    quiet")
    response = app.put(url, template.encode(), expect_errors=True)
    assert response.status_int == 409  # no custom503.http yet: even `quiet` does not hide why
    assert "error opening file" in response.text
    template = template.replace("    errorfile 503 {INSTANCE_DIR}/custom503.http\n", "")
    try:
        response = app.put(url, template.encode())
        assert response.text.splitlines()[2].startswith("haproxy daemon for %s started" % instance_id)
        response = app.put(url, template.encode() + b"# changed\n")
        assert response.text.splitlines()[2].startswith("haproxy daemon for %s reloaded" % instance_id)
    finally:
        assert app.delete(url).text == "OK\nhaproxy daemon %s killed.\n" % instance_id


def test_a_certificate_named_with_the_longest_allowed_filename_is_stored(app, state_dir,
                                                                         instance_id):
    """255 bytes is the contract's limit for :filename.pem; the temporary name
    beside it (a prefix and the pid added) must still fit the file system."""
    import datetime
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    common_name = "a" * 251  # X.509 says 64 at most; certificates in the wild say otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name,
                                                _validate=False)])
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    body = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + \
        cert.public_bytes(serialization.Encoding.PEM)
    filename = common_name + ".pem"
    assert len(filename.encode()) == 255
    url = "/instances/%s/certificates/%s" % (instance_id, filename)
    response = app.put(url, body, expect_errors=True)
    assert response.status_int == 201, response.text
    with open(Instance(state_dir, instance_id).certificate(filename), "rb") as stored:
        assert stored.read() == body
    assert os.listdir(Instance(state_dir, instance_id).certificates_dir) == [filename]


class FakeMasterCli:
    """haproxy's master CLI as the runtime certificate swap talks to it."""

    def __init__(self, loaded, answers, transaction=None):
        self.loaded, self.answers, self.commands = loaded, dict(answers), []
        self.transaction = transaction

    def __call__(self, instance_dir, command, timeout=1.0):
        self.commands.append(command.split(" <<")[0])
        if command == "@1 show ssl cert":
            opened = "# transaction\n*%s\n" % self.transaction if self.transaction else ""
            return opened + "# filename\n" + "".join(path + "\n" for path in self.loaded)
        if command in ("@1 show ssl ca-file", "@1 show ssl crl-file"):
            return "# transaction\n# filename\n"
        for prefix, answer in self.answers.items():
            if command.startswith(prefix):
                return answer
        return "\n"


@pytest.fixture
def running_haproxy(monkeypatch, state_dir, instance_id, config):
    """An instance whose haproxy 'runs' (a fake process) and names its certificate;
    its reloads are recorded, not done."""
    from appliance_api.system import daemons

    instance = Instance(state_dir, instance_id)
    os.makedirs(instance.certificates_dir)
    template = "frontend f\n    bind :443 ssl crt {INSTANCE_DIR}/certificates/x.pem\n"
    with open(instance.template("haproxy"), "w") as file:
        file.write(template)
    with open(instance.rendered("haproxy"), "w") as file:
        file.write(daemons.Haproxy(instance, config).render(template))
    fake = type("Process", (), {"pid": 4242})()
    monkeypatch.setattr(daemons.Haproxy, "process", lambda self: fake)
    monkeypatch.setattr(daemons.Stunnel, "process", lambda self: None)
    reloads = []
    monkeypatch.setattr(daemons.Haproxy, "apply", lambda self, keep_outcome=True: reloads.append(
        keep_outcome) or "haproxy daemon for %s reloaded (pid 4242)" % instance_id)
    return instance, reloads


def put_swapped(instance, data, config):
    from appliance_api import services

    return services.replace_file(instance, instance.certificate("x.pem"), data, config,
                                 mode=0o600, certificate=True)


def test_a_certificate_haproxy_holds_is_swapped_without_a_reload(running_haproxy, config,
                                                                 monkeypatch):
    from appliance_api.system import haproxy

    instance, reloads = running_haproxy
    path = os.path.abspath(instance.certificate("x.pem"))
    cli = FakeMasterCli([path], {"@1 set ssl cert": "Transaction created for certificate %s!\n"
                                 % path, "@1 commit ssl cert": "Committing %s.\nSuccess!\n" % path})
    monkeypatch.setattr(haproxy, "master_cli", cli)
    lines = put_swapped(instance, b"new bundle\n", config)
    assert lines == ["haproxy daemon for %s took x.pem without a reload (pid 4242)" % instance.id]
    assert reloads == []
    assert cli.commands == ["@1 show ssl cert", "@1 show ssl ca-file", "@1 show ssl crl-file",
                            "@1 set ssl cert " + path, "@1 commit ssl cert " + path]


def test_a_transaction_a_killed_request_left_open_is_aborted_first(running_haproxy, config,
                                                                   monkeypatch):
    from appliance_api.system import haproxy

    instance, reloads = running_haproxy
    path = os.path.abspath(instance.certificate("x.pem"))
    cli = FakeMasterCli([path], {"@1 set ssl cert": "Transaction created\n",
                                 "@1 commit ssl cert": "Committing.\nSuccess!\n"},
                        transaction="/elsewhere/y.pem")
    monkeypatch.setattr(haproxy, "master_cli", cli)
    put_swapped(instance, b"new bundle\n", config)
    assert cli.commands[3:] == ["@1 abort ssl cert /elsewhere/y.pem", "@1 set ssl cert " + path,
                                "@1 commit ssl cert " + path]


def test_a_refused_set_changes_nothing_live_and_a_reload_decides(running_haproxy, config,
                                                                 monkeypatch):
    """haproxy's parser may disagree with ours, or the payload may pass a
    smaller tune.bufsize: nothing live changed, so a reload reads the file."""
    from appliance_api.system import haproxy

    instance, reloads = running_haproxy
    path = os.path.abspath(instance.certificate("x.pem"))
    cli = FakeMasterCli([path], {"@1 set ssl cert": "unable to load certificate from file "
                                 "'x'.\nCan't load the payload\n"})
    monkeypatch.setattr(haproxy, "master_cli", cli)
    lines = put_swapped(instance, b"new bundle\n", config)
    assert lines == ["haproxy daemon for %s reloaded (pid 4242)" % instance.id]
    assert cli.commands[-1] == "@1 abort ssl cert " + path
    assert reloads == [True]


@pytest.mark.parametrize("answers", [
    {"@1 set ssl cert": "Transaction created for certificate x!\n",
     "@1 commit ssl cert": "inconsistencies between private key and certificate loaded 'x'.\n"
                           "Can't commit x!\n"},
], ids=["commit refused"])
def test_a_certificate_haproxy_refuses_changes_nothing(running_haproxy, config, monkeypatch,
                                                      answers):
    from appliance_api.errors import Conflict
    from appliance_api.system import haproxy

    instance, reloads = running_haproxy
    path = os.path.abspath(instance.certificate("x.pem"))
    with open(path, "wb") as file:
        file.write(b"old bundle\n")
    cli = FakeMasterCli([path], answers)
    monkeypatch.setattr(haproxy, "master_cli", cli)
    with pytest.raises(Conflict) as refused:
        put_swapped(instance, b"new bundle\n", config)
    assert refused.value.reason.startswith("haproxy refused the certificate")
    assert cli.commands[-1] == "@1 abort ssl cert " + path  # nothing left open in haproxy
    with open(path, "rb") as file:
        assert file.read() == b"old bundle\n"  # the old file back
    assert reloads == [False]  # and read again (its outcome record kept)


@pytest.mark.parametrize("loaded, size", [([], 100), (None, 100), ("same", 20000)],
                         ids=["not held", "no CLI", "over the CLI buffer"])
def test_otherwise_haproxy_is_reloaded(running_haproxy, config, monkeypatch, loaded, size):
    from appliance_api.system import haproxy

    instance, reloads = running_haproxy
    path = os.path.abspath(instance.certificate("x.pem"))
    cli = FakeMasterCli([path] if loaded == "same" else loaded or [], {})
    monkeypatch.setattr(haproxy, "master_cli", (lambda *a, **k: None) if loaded is None else cli)
    lines = put_swapped(instance, b"x" * size + b"\n", config)
    assert lines == ["haproxy daemon for %s reloaded (pid 4242)" % instance.id]
    assert reloads == [True]


@pytest.mark.parametrize("template, listeners", [
    ("[tls]\naccept = 8443\nconnect = 80\n", [("tls", "0.0.0.0:8443")]),
    ("[a]\naccept = 10.0.0.9:443\n[b]\naccept = [2001:db8::5]:443\n; accept = 1\n",
     [("a", "10.0.0.9:443"), ("b", "2001:db8::5:443")]),
    ("[v6]\naccept = :::443\n", [("v6", ":::443")]),
    # Two accepts in one service, or one before any service: stunnel binds
    # them itself (no hand-over).
    ("[a]\naccept = 443\naccept = 444\n", None),
    ("accept = 99\n[a]\naccept = 100\n", None),
    ("[my tls]\naccept = 127.0.0.1:443\n", [("my tls", "127.0.0.1:443")]),
])
def test_the_listeners_stunnel_is_handed(config, instance_id, template, listeners):
    from appliance_api.system.stunnel import Stunnel

    instance = Instance(config.state_dir, instance_id)
    os.makedirs(instance.dir)
    stunnel = Stunnel(instance, config)
    with open(instance.rendered("stunnel"), "w") as file:
        file.write(stunnel.render(template))
    assert stunnel._listeners() == listeners


def test_a_body_shorter_than_its_content_length_is_refused(config, state_dir, instance_id):
    """lighttpd stopped mid-upload may hand over less than it announced:
    nothing of it is stored."""
    import io

    from appliance_api.app import handle
    from conftest import VERIFIED

    environ = dict(VERIFIED, REQUEST_METHOD="PUT", CONTENT_LENGTH="100",
                   PATH_INFO="/instances/%s/custom503" % instance_id,
                   **{"wsgi.input": io.BytesIO(b"HTTP/1.0 503 Service Unavailable\r\n\r\n")})
    response = handle(environ, config)
    assert (response.status, response.body) == (
        403, b"Request body shorter than its Content-Length\n")
    assert not os.path.exists(os.path.join(state_dir, "instances", instance_id))


def served_503(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = b""
        while True:
            data = sock.recv(4096)
            if not data:
                return answer.split(b"\r\n\r\n", 1)[1]
            answer += data


def killed_after_storing(app, method, path, body=b""):
    """Run a request in a child process that dies (os._exit) where it would
    start or reload a daemon: its files stored, nothing run; what a SIGKILL
    there leaves. The marking is the production code's own."""
    from appliance_api.system import daemon

    import signal
    import time

    child = os.fork()
    if child == 0:
        try:
            daemon.Daemon.apply = lambda *args, **kwargs: os._exit(9)
            app.request(path, method=method, body=body, expect_errors=True)
        finally:
            os._exit(1)  # never reached a daemon
    deadline = time.monotonic() + 30
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            assert os.WEXITSTATUS(status) == 9, "the request never reached a daemon"
            return
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the request hung")
        time.sleep(0.01)


def test_a_change_killed_before_its_reload_is_finished_by_the_next_sync_run(
        app, config, state_dir, instance_id):
    """No request need come: an active's controller skips a certificate
    whose ETag matches, a standby's sync a file whose digest matches. The
    sync run (every 10 s, every node) reloads the daemon the mark names."""
    from appliance_api import sync

    port = free_port()
    assert app.put("/instances/%s/custom503" % instance_id, PAGE).status_int == 201
    assert app.put("/instances/%s/haproxy" % instance_id,
                   (HAPROXY % port).encode()).status_int == 201
    instance = Instance(state_dir, instance_id)
    try:
        killed_after_storing(app, "PUT", "/instances/%s/custom503" % instance_id,
                             PAGE.replace(b"sorry", b"newer"))
        with open(instance.reload_pending) as mark:
            assert mark.read() == "haproxy\n"
        assert app.get("/instances/%s/custom503" % instance_id).body == \
            PAGE.replace(b"sorry", b"newer")
        assert served_503(port) == b"sorry\n"  # stored, not run
        line = sync.run(config)
        assert line == ("interrupted changes: 1 daemons caught up, 0 instances failing; "
                        "topology SINGLE: nothing to do (only a standby syncs)")
        assert served_503(port) == b"newer\n"
        assert not os.path.exists(instance.reload_pending)
        assert sync.run(config) == "topology SINGLE: nothing to do (only a standby syncs)"
    finally:
        assert app.delete("/instances/" + instance_id).status_int == 200


def test_a_killed_first_config_is_started_by_the_next_change(app, config, state_dir,
                                                             instance_id):
    from appliance_api.instance_report import as_text, describe

    port = free_port()
    assert app.put("/instances/%s/custom503" % instance_id, PAGE).status_int == 201
    killed_after_storing(app, "PUT", "/instances/%s/haproxy" % instance_id,
                         (HAPROXY % port).encode())
    instance = Instance(state_dir, instance_id)
    try:
        with open(instance.reload_pending) as mark:
            assert mark.read() == "haproxy\n"
        assert describe(instance, config)["services"]["haproxy"]["behind_stored_files"]
        assert "  not yet running the stored files: a change was interrupted (the next " \
            "change or octctl sync runs them)" in as_text(describe(instance, config))
        response = app.put("/instances/%s/custom503" % instance_id, PAGE)  # the same page
        lines = response.text.splitlines()
        assert lines[0] == "OK" and lines[1].startswith(
            "haproxy daemon for %s started (pid " % instance_id)
        assert served_503(port) == b"sorry\n"
        assert not os.path.exists(instance.reload_pending)
        assert not describe(instance, config)["services"]["haproxy"]["behind_stored_files"]
    finally:
        assert app.delete("/instances/" + instance_id).status_int == 200


def test_a_daemon_that_cannot_catch_up_does_not_block_the_change_that_mends_it(
        app, state_dir, instance_id):
    """A killed PUT stored a config its haproxy cannot run (a port taken
    since): the next PUT, with a good config, is not refused for it."""
    port = free_port()
    assert app.put("/instances/%s/custom503" % instance_id, PAGE).status_int == 201
    assert app.put("/instances/%s/haproxy" % instance_id,
                   (HAPROXY % port).encode()).status_int == 201
    instance = Instance(state_dir, instance_id)
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        killed_after_storing(app, "PUT", "/instances/%s/haproxy" % instance_id,
                             (HAPROXY % taken.getsockname()[1]).encode())
        good = free_port()
        response = app.put("/instances/%s/haproxy" % instance_id, (HAPROXY % good).encode())
        assert response.status_int == 201, response.text
        lines = response.text.splitlines()
        assert lines[1].startswith("haproxy daemon for %s still does not run its stored "
                                   "files: " % instance_id)
        assert lines[-1].startswith("haproxy daemon for %s reloaded (pid " % instance_id)
        assert served_503(good) == b"sorry\n"  # the good config runs
        assert not os.path.exists(instance.reload_pending)
    finally:
        taken.close()
        assert app.delete("/instances/" + instance_id).status_int == 200


def test_a_refused_change_keeps_the_name_an_earlier_killed_one_left(app, config, state_dir,
                                                                    instance_id):
    """A killed first config (its port taken since) stays named when the next
    config PUT is refused too: nothing runs it yet, and the sync run after
    the port is free starts it."""
    from appliance_api import sync

    assert app.put("/instances/%s/custom503" % instance_id, PAGE).status_int == 201
    instance = Instance(state_dir, instance_id)
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        killed_after_storing(app, "PUT", "/instances/%s/haproxy" % instance_id,
                             (HAPROXY % port).encode())
        assert running.behind(instance) == {"haproxy"}
        response = app.put("/instances/%s/haproxy" % instance_id,
                           (HAPROXY % port).replace("maxconn 64", "maxconn 65").encode(),
                           expect_errors=True)
        assert response.status_int == 409, response.text
        assert running.behind(instance) == {"haproxy"}
        taken.close()
        line = sync.run(config)
        assert line.startswith("interrupted changes: 1 daemons caught up, 0 instances failing")
        assert served_503(port) == b"sorry\n"
        assert running.behind(instance) == set()
    finally:
        taken.close()
        assert app.delete("/instances/" + instance_id).status_int == 200


def test_a_certificate_swapped_in_memory_does_not_catch_haproxy_up(running_haproxy, config,
                                                                   monkeypatch):
    """haproxy named behind its stored config, whose catch-up fails: a
    certificate then swapped in its memory leaves it named."""
    from appliance_api.system import daemons, haproxy

    instance, _reloads = running_haproxy
    with open(instance.reload_pending, "w") as mark:
        mark.write("haproxy\n")

    def refuse(self, keep_outcome=True):
        raise daemons.DaemonFailed("haproxy failed to reload")

    monkeypatch.setattr(daemons.Haproxy, "apply", refuse)
    path = os.path.abspath(instance.certificate("x.pem"))
    monkeypatch.setattr(haproxy, "master_cli", FakeMasterCli([path], {
        "@1 set ssl cert": "Transaction created for certificate %s!\n" % path,
        "@1 commit ssl cert": "Committing %s.\nSuccess!\n" % path}))
    lines = put_swapped(instance, b"new bundle\n", config)
    assert lines == ["haproxy daemon for %s still does not run its stored files: haproxy "
                     "failed to reload" % instance.id,
                     "haproxy daemon for %s took x.pem without a reload (pid 4242)"
                     % instance.id]
    assert running.behind(instance) == {"haproxy"}
