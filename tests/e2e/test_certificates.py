"""Certificates through lighttpd, as the original's sample call sends them,
served by a real stunnel: a replaced certificate is what the next TLS
connection sees; a refused one changes nothing, byte for byte."""
import hashlib
import os
import socket
import ssl

import pytest

from .conftest import pki_tool
from .helpers import eventually, free_port, haproxy_template, live_children, pid_gone


def listener_certificate(ca, common_name="localhost"):
    """(upload bytes: key then certificate, DER of the certificate)."""
    from cryptography.hazmat.primitives import serialization

    cert, key = pki_tool.make_leaf(ca[0], ca[1], common_name, server=True,
                                   sans=["localhost", "127.0.0.1"])
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem + cert.public_bytes(serialization.Encoding.PEM), \
        cert.public_bytes(serialization.Encoding.DER)


def presented_certificate(port):
    """The DER certificate a new TLS connection to 127.0.0.1:port is shown."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def tls_ended_by(api, instance_id, service, template):
    """The instance's service ends TLS on a free port with a first
    localhost.pem of a tenant CA of its own: (the CA, the certificate's URL,
    the port). template(port) is the service's config."""
    ca = pki_tool.make_ca("tenant CA")
    first, first_der = listener_certificate(ca)
    url = "/instances/%s/certificates/localhost.pem" % instance_id
    assert api.put(url, first).status == 201
    port = free_port()
    reply = api.put("/instances/%s/%s" % (instance_id, service), template(port))
    assert reply.status == 201, reply
    assert presented_certificate(port) == first_der
    return ca, url, port


@pytest.fixture
def tls_instance(api, backend, instance_id):
    ca, url, port = tls_ended_by(api, instance_id, "stunnel", lambda port: (
        "[tls]\naccept = {MYIP}:%d\nconnect = 127.0.0.1:%d\n"
        "cert = {INSTANCE_DIR}/certificates/localhost.pem\n" % (port, backend.port)))
    return ca, url, port, os.path.join(api.instances_dir, instance_id, "certificates",
                                       "localhost.pem")


@pytest.mark.parametrize("expect", [("-H", "Expect:"), ()], ids=["no-expect", "expect-100"])
def test_replaced_certificate_is_served_to_new_connections(api, tls_instance, expect):
    ca, url, port, stored = tls_instance
    second, second_der = listener_certificate(ca)
    reply = api.put(url, second, *expect)
    assert reply.status == 201, reply
    assert reply.lines[0] == "OK"
    assert reply.lines[1].startswith("stunnel daemon for ") and "reloaded" in reply.lines[1]
    assert eventually(lambda: presented_certificate(port) == second_der, 5)
    with open(stored, "rb") as file:
        assert file.read() == second
    assert os.stat(stored).st_mode & 0o777 == 0o600


def test_refused_certificate_changes_nothing(api, tls_instance):
    ca, url, port, stored = tls_instance
    with open(stored, "rb") as file:
        before = file.read()
    served = presented_certificate(port)
    other, _ = listener_certificate(ca)
    mismatched = other[:other.index(b"-----BEGIN CERTIFICATE")] + \
        before[before.index(b"-----BEGIN CERTIFICATE"):]
    for body, reason in ((mismatched, "Certificate and key do not match"),
                         (b"garbage\n", "File contains data that is not a PEM key or certificate"),
                         (b"", "No certificate found")):
        reply = api.put(url, body, "-H", "Expect:")
        assert (reply.status, reply.body) == (409, reason + "\n"), reply
        with open(stored, "rb") as file:
            assert file.read() == before
        assert presented_certificate(port) == served
    wrong_name, _ = listener_certificate(ca, "www.example.com")
    reply = api.put(url, wrong_name)
    assert reply.status == 409
    assert reply.body == ("Filename does not match the certificate's common name "
                          "(expected www.example.com.pem)\n")
    with open(stored, "rb") as file:
        assert file.read() == before


def test_get_etag_and_delete_rules(api, tls_instance):
    _ca, url, _port, stored = tls_instance
    with open(stored, "rb") as file:
        content = file.read()
    reply = api.request("-D", "-", api.url(url))
    assert reply.status == 200
    etag = '"%s"' % hashlib.sha256(content).hexdigest()
    assert ("etag: %s" % etag) in reply.body.lower()
    assert reply.content_type == "application/x-pem-file"
    # The key stays on the appliance: the certificate only, the ETag the stored file's.
    assert "PRIVATE KEY" not in reply.body
    assert reply.body.endswith(content[content.index(b"-----BEGIN CERTIFICATE"):].decode())
    reply = api.delete(url)
    assert (reply.status, reply.body) == (409, "Certificate is in use by the stunnel configuration\n")
    assert os.path.exists(stored)


def test_stunnel_reload_that_cannot_bind_is_rolled_back(api, backend, tls_instance):
    """stunnel has no check mode: the new config is tried with SIGHUP, and a
    listener it cannot bind brings the old file and listener back."""
    _ca, url, port, _stored = tls_instance
    instance = url.split("/")[2]
    pid = api.service_pid(instance, "stunnel")
    served = presented_certificate(port)
    before = api.get("/instances/%s/stunnel" % instance).body
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        template = before.replace(":%d\n" % port, ":%d\n" % taken.getsockname()[1])
        assert template != before
        reply = api.put("/instances/%s/stunnel" % instance, template)
        assert reply.status == 409, reply
        assert reply.lines[0] == "Invalid configuration"
        assert "Binding service [tls] failed" in reply.body
    assert api.get("/instances/%s/stunnel" % instance).body == before
    assert api.service_pid(instance, "stunnel") == pid
    assert eventually(lambda: presented_certificate(port) == served, 5)


# --- TLS ended by haproxy: the certificate swapped in memory, no reload ---------------

@pytest.fixture
def haproxy_tls_instance(api, backend, instance_id):
    ca, url, port = tls_ended_by(api, instance_id, "haproxy", lambda port: haproxy_template(
        port, backend.port).replace(
            "bind {MYIP}:%d\n" % port,
            "bind {MYIP}:%d ssl crt {INSTANCE_DIR}/certificates/localhost.pem\n" % port))
    return ca, url, port, instance_id


def haproxy_processes(api, instance_id):
    master = api.service_pid(instance_id, "haproxy")
    return master, live_children(master)


def test_haproxy_takes_a_new_certificate_without_a_reload(api, haproxy_tls_instance):
    ca, url, port, instance_id = haproxy_tls_instance
    before = haproxy_processes(api, instance_id)
    for _round in range(3):
        certificate, der = listener_certificate(ca)
        reply = api.put(url, certificate)
        assert reply.status == 201, reply
        assert reply.lines == ["OK", "haproxy daemon for %s took localhost.pem without a reload "
                                     "(pid %d)" % (instance_id, before[0])]
        # Served at once: the commit has answered before the PUT does.
        assert presented_certificate(port) == der
    assert haproxy_processes(api, instance_id) == before  # the same master and worker
    # A later reload reads the file on disk: the last certificate, still.
    reply = api.put("/instances/%s/haproxy" % instance_id,
                    api.get("/instances/%s/haproxy" % instance_id).body + "# again\n")
    assert reply.status == 201, reply
    assert eventually(lambda: presented_certificate(port) == der, 5)


def test_haproxy_refusing_a_certificate_changes_nothing(api, haproxy_tls_instance):
    """What the API's own checks refuse never reaches haproxy: 2.6 breaks live
    connections when it refuses a commit for a key that does not match."""
    ca, url, port, instance_id = haproxy_tls_instance
    served = presented_certificate(port)
    before = haproxy_processes(api, instance_id)
    stored = os.path.join(api.instances_dir, instance_id, "certificates", "localhost.pem")
    with open(stored, "rb") as file:
        old = file.read()
    other, _ = listener_certificate(ca)
    mismatched = other[:other.index(b"-----BEGIN CERTIFICATE")] + \
        old[old.index(b"-----BEGIN CERTIFICATE"):]
    reply = api.put(url, mismatched)
    assert (reply.status, reply.body) == (409, "Certificate and key do not match\n")
    assert presented_certificate(port) == served
    assert haproxy_processes(api, instance_id) == before
    with open(stored, "rb") as file:
        assert file.read() == old


# --- stunnel: listeners the API binds and hands over, kept across reloads -------------

def listening_inode(port):
    """The inode of the socket listening on 127.0.0.1:port (/proc/net/tcp)."""
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == "0100007F:%04X" % port and fields[3] == "0A":
                return int(fields[9])
    return None


def socket_inodes(pid):
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def test_stunnel_keeps_its_listener_open_through_certificate_changes(api, tls_instance):
    """stunnel gets its listening socket from the API (socket activation), so
    a SIGHUP never closes it: not one connection is refused while
    certificates change under a stream of new connections."""
    import threading

    ca, url, port, _stored = tls_instance
    instance = url.split("/")[2]
    pid = api.service_pid(instance, "stunnel")
    inode = listening_inode(port)
    assert inode in socket_inodes(pid)
    failures, done = [], threading.Event()

    def connect_again_and_again():
        while not done.is_set():
            try:
                presented_certificate(port)
            except OSError as error:
                failures.append(error)

    clients = [threading.Thread(target=connect_again_and_again) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        for _round in range(5):
            certificate, der = listener_certificate(ca)
            reply = api.put(url, certificate)
            assert reply.status == 201, reply
            assert reply.lines[1] == "stunnel daemon for %s reloaded (pid %d)" % (instance, pid)
            assert presented_certificate(port) == der  # reloaded before the answer
    finally:
        done.set()
        for client in clients:
            client.join()
    assert failures == []
    assert listening_inode(port) == inode and inode in socket_inodes(pid)


def test_stunnel_moved_to_another_port_is_restarted_on_it(api, backend, tls_instance):
    _ca, url, port, _stored = tls_instance
    instance = url.split("/")[2]
    pid = api.service_pid(instance, "stunnel")
    template = api.get("/instances/%s/stunnel" % instance).body
    new_port = free_port()
    reply = api.put("/instances/%s/stunnel" % instance,
                    template.replace(":%d\n" % port, ":%d\n" % new_port))
    assert reply.status == 201, reply
    new_pid = api.service_pid(instance, "stunnel")
    assert reply.lines[-1] == "stunnel daemon for %s restarted (pid %d)" % (instance, new_pid)
    assert eventually(lambda: pid_gone(pid))
    assert listening_inode(port) is None
    assert listening_inode(new_port) in socket_inodes(new_pid)


def test_a_stunnel_that_binds_its_own_listeners_is_still_reloaded(api, tls_instance):
    """A stunnel started by an older API (no record of handed-over sockets)
    takes a certificate by SIGHUP as before: no restart, no refusal."""
    ca, url, port, _stored = tls_instance
    instance = url.split("/")[2]
    pid = api.service_pid(instance, "stunnel")
    os.unlink(os.path.join(api.instances_dir, instance, "stunnel.listeners"))
    certificate, der = listener_certificate(ca)
    reply = api.put(url, certificate)
    assert reply.status == 201, reply
    assert reply.lines[1] == "stunnel daemon for %s reloaded (pid %d)" % (instance, pid)
    assert eventually(lambda: presented_certificate(port) == der, 5)


def test_renamed_services_keep_their_listeners(api, tls_instance):
    """Service names (one with a space) and their order of addresses are
    what the hand-over follows: a rename alone is a plain reload."""
    ca, url, port, _stored = tls_instance
    instance = url.split("/")[2]
    pid = api.service_pid(instance, "stunnel")
    inode = listening_inode(port)
    template = api.get("/instances/%s/stunnel" % instance).body
    reply = api.put("/instances/%s/stunnel" % instance, template.replace("[tls]", "[my tls]"))
    assert reply.status == 201, reply
    assert reply.lines[-1] == "stunnel daemon for %s reloaded (pid %d)" % (instance, pid)
    certificate, der = listener_certificate(ca)
    reply = api.put(url, certificate)
    assert reply.status == 201, reply
    assert reply.lines[1] == "stunnel daemon for %s reloaded (pid %d)" % (instance, pid)
    assert presented_certificate(port) == der
    assert listening_inode(port) == inode


def test_the_same_certificate_again_catches_haproxy_up(api, haproxy_tls_instance):
    """A PUT killed after writing the file but before haproxy's swap leaves
    haproxy on the old certificate; the controller's retry (same bytes) swaps it."""
    ca, url, port, instance_id = haproxy_tls_instance
    served = presented_certificate(port)
    certificate, der = listener_certificate(ca)
    stored = os.path.join(api.instances_dir, instance_id, "certificates", "localhost.pem")
    with open(stored, "wb") as file:  # what the killed request did
        file.write(certificate)
    assert presented_certificate(port) == served
    reply = api.put(url, certificate)
    assert reply.status == 201, reply
    assert reply.lines[1].endswith("took localhost.pem without a reload (pid %d)"
                                   % api.service_pid(instance_id, "haproxy"))
    assert presented_certificate(port) == der
    reply = api.put(url, certificate)  # and now truly the same: nothing to do
    assert reply.lines == ["OK"]


def test_the_same_certificate_again_catches_stunnel_up(api, tls_instance):
    """The same for stunnel, which cannot say what it serves: the killed
    request left stunnel named in the instance's reload.pending (written
    before the file), so the retry, or any change of the instance, reloads
    it first. (tests/unit/test_write_endpoints.py kills real requests there.)"""
    ca, url, port, stored = tls_instance
    instance = url.split("/")[2]
    pid = api.service_pid(instance, "stunnel")
    served = presented_certificate(port)
    certificate, der = listener_certificate(ca)
    mark = os.path.join(api.instances_dir, instance, "reload.pending")
    with open(mark, "w") as named, open(stored, "wb") as file:  # what the killed request did
        named.write("stunnel\n")
        file.write(certificate)
    assert presented_certificate(port) == served
    reply = api.put(url, certificate)
    assert reply.status == 201, reply
    assert reply.lines[1] == "stunnel daemon for %s reloaded (pid %d)" % (instance, pid)
    assert eventually(lambda: presented_certificate(port) == der, 5)
    assert not os.path.exists(mark)
    reply = api.put(url, certificate)  # and now truly the same: nothing to do
    assert reply.lines == ["OK"]


# --- crt-lists: certificates and SNI filters per line, for a haproxy bind -------------

CRT_LIST_LINE = "{INSTANCE_DIR}/certificates/%s.pem %s\n"


def named_certificate(ca, common_name):
    """A key + certificate for common_name alone (no localhost SAN: the SNI
    filters, not the names in it, decide who gets it)."""
    from cryptography.hazmat.primitives import serialization

    cert, key = pki_tool.make_leaf(ca[0], ca[1], common_name, server=True, sans=[common_name])
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + \
        cert.public_bytes(serialization.Encoding.PEM)


def served_common_name(port, server_name):
    """The CN of the certificate a new TLS connection with SNI server_name is shown."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=server_name) as tls:
            cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def crt_list(assignments):
    """A crt-list giving each certificate (by CN) its SNI names."""
    return "".join(CRT_LIST_LINE % (name, " ".join(snis)) for name, snis in assignments)


@pytest.fixture
def crt_list_instance(api, backend, instance_id):
    """haproxy ending TLS with a crt-list of two certificates: alpha.test for
    one.test, beta.test for two.test. (instance id, the crt-list's URL, port)."""
    ca = pki_tool.make_ca("tenant CA")
    base = "/instances/%s" % instance_id
    for name in ("alpha.test", "beta.test"):
        assert api.put(base + "/certificates/%s.pem" % name,
                       named_certificate(ca, name)).status == 201
    url = base + "/crt-lists/listener"
    reply = api.put(url, crt_list([("alpha.test", ["one.test"]), ("beta.test", ["two.test"])]))
    assert (reply.status, reply.lines) == (201, ["OK"])  # no config reads it yet: no reload
    port = free_port()
    reply = api.put(base + "/haproxy", haproxy_template(port, backend.port).replace(
        "bind {MYIP}:%d\n" % port,
        "bind {MYIP}:%d ssl crt-list {INSTANCE_DIR}/crt-lists/listener\n" % port))
    assert reply.status == 201, reply
    return instance_id, url, port


def test_a_crt_list_serves_each_sni_name_its_certificate(api, crt_list_instance):
    import json

    from .helpers import octctl

    instance, url, port = crt_list_instance
    assert served_common_name(port, "one.test") == "alpha.test"
    assert served_common_name(port, "two.test") == "beta.test"
    assert served_common_name(port, "other.test") == "alpha.test"  # the first line: the default
    # octctl show lists it, what it names, and who reads it.
    report = json.loads(octctl(api, "show", instance, "--json").stdout)
    assert report["crt_lists"] == [{"name": "listener", "used_by": ["haproxy"],
                                    "files": ["alpha.test.pem", "beta.test.pem"]}]
    assert "  listener  names alpha.test.pem beta.test.pem; read by haproxy" in \
        octctl(api, "show", instance).stdout.splitlines()


class TlsLoad:
    """Threads making one new TLS connection and GET after another with SNI
    server_name, until stopped: how many were answered 200, and every failure."""

    def __init__(self, port, server_name, threads=4):
        import threading

        self.port, self.server_name = port, server_name
        self.answered, self.failures = 0, []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    with context.wrap_socket(sock, server_hostname=self.server_name) as tls:
                        tls.sendall(b"GET / HTTP/1.0\r\nHost: %s\r\n\r\n"
                                    % self.server_name.encode())
                        answer = b""
                        while True:
                            chunk = tls.recv(65536)
                            if not chunk:
                                break
                            answer += chunk
                status_line = answer.split(b"\r\n", 1)[0]
                failure = None if status_line.split()[1:2] == [b"200"] else repr(status_line)
            except (OSError, ssl.SSLError, IndexError) as error:
                failure = "%s: %s" % (type(error).__name__, error)
            with self._lock:
                if failure:
                    self.failures.append(failure)
                else:
                    self.answered += 1

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(10)



def test_replacing_a_crt_list_swaps_certificates_for_new_connections_dropping_none(
        api, crt_list_instance):
    """haproxy 2.6's runtime API cannot replace a crt-list's default (first)
    line nor reorder lines, so a replacement reloads haproxy (SIGUSR2 to the
    master: the same master, a new worker, the listener handed over). Under
    a load of new TLS connections with SNI one.test, across several
    replacements: not one fails, and each replacement is what the next
    connection sees."""
    instance, url, port = crt_list_instance
    master, workers = haproxy_processes(api, instance)
    swapped = crt_list([("alpha.test", ["two.test"]), ("beta.test", ["one.test"])])
    first = api.get(url).body
    with TlsLoad(port, "one.test") as load:
        for round_number in range(4):
            body = swapped if round_number % 2 == 0 else first
            reply = api.put(url, body)
            assert reply.status == 201, reply
            assert reply.lines == ["OK", "haproxy daemon for %s reloaded (pid %d)"
                                   % (instance, master)]
            expected = "beta.test" if round_number % 2 == 0 else "alpha.test"
            assert served_common_name(port, "one.test") == expected
            answered = load.answered
            assert eventually(lambda: load.answered > answered + 20, 10)  # traffic went on
    assert load.failures == [] and load.answered > 80, (load.answered, load.failures[:5])
    assert api.service_pid(instance, "haproxy") == master  # reloaded, never restarted
    assert live_children(master) != workers  # each reload a new worker
    print("crt-list replaced 4 times under load: %d requests, %d failed"
          % (load.answered, len(load.failures)))


def test_a_crt_list_in_use_and_its_certificates_cannot_be_deleted(api, crt_list_instance):
    instance, url, port = crt_list_instance
    reply = api.delete(url)
    assert (reply.status, reply.body) == (409, "crt-list is in use by the haproxy configuration\n")
    reply = api.delete("/instances/%s/certificates/beta.test.pem" % instance)
    assert (reply.status, reply.body) == (409, "Certificate is in use by the crt-list listener\n")
    assert served_common_name(port, "two.test") == "beta.test"


def test_a_refused_crt_list_changes_nothing(api, crt_list_instance):
    instance, url, port = crt_list_instance
    master = haproxy_processes(api, instance)
    before = api.get(url).body
    for body, why in (
            ("/etc/ssl/private/ssl-cert-snakeoil.key\n", "must be named"),
            (CRT_LIST_LINE % ("alpha.test", "[crt /etc/passwd]"), "crt: not an option"),
            (CRT_LIST_LINE % ("gamma.test", ""), "not a stored key and certificate file")):
        reply = api.put(url, body)
        assert reply.status == 409 and reply.lines[0] == "Invalid crt-list", reply
        assert why in reply.body
    assert api.get(url).body == before
    assert haproxy_processes(api, instance) == master  # nothing was reloaded
    assert served_common_name(port, "two.test") == "beta.test"
