"""Refusals at the door (issue 5), heavier than tests/e2e/test_tls.py: many TLS
handshakes that must fail (no client certificate, another CA's, an expired one,
TLS 1.1 only), none reaching the API script; and a certificate from the right CA
whose CN is not in the configured allow-list, refused by the API with 403.
"""
import concurrent.futures
import os
import socket
import ssl
import uuid
import warnings

import pytest

import pki as pki_tool  # tools/pki.py

from e2e.conftest import pki  # noqa: F401  (session fixture)

from . import figures
from .lighttpd_site import start_site, stop_site

ATTEMPTS = figures.scaled(20, 200)
WORKERS = 8

# kind: (the pki fixture's attribute for the client certificate, TLS 1.1 only,
#        the reasons Python's ssl may give for the server's alert)
KINDS = {
    "no-client-cert": (None, False, {"TLSV13_ALERT_CERTIFICATE_REQUIRED"}),
    "other-ca": ("other_ca_client", False, {"TLSV1_ALERT_UNKNOWN_CA"}),
    "expired": ("expired_client", False, {"SSLV3_ALERT_CERTIFICATE_EXPIRED"}),
    "tls1.1": ("client", True, {"TLSV1_ALERT_PROTOCOL_VERSION"}),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory, pki):  # noqa: F811
    api = start_site(str(tmp_path_factory.mktemp("access-site")), pki)
    try:
        yield api
    finally:
        stop_site(api)


def context_for(pki, kind):  # noqa: F811
    cert_name, tls11, _ = KINDS[kind]
    context = ssl.create_default_context(cafile=pki.ca)
    context.set_alpn_protocols(["http/1.1"])
    if cert_name:
        context.load_cert_chain(getattr(pki, cert_name))
    if tls11:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1_1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        # OpenSSL 3 refuses TLS 1.1 on the client side at its default level: the
        # refusal under test must be the server's.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def attempt(port, context, path):
    """Handshake, then a request (with TLS 1.3 the server's verdict on the client
    certificate arrives after the client's side of the handshake): what happened,
    and the HTTP bytes that came back (there must be none)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        conn = context.wrap_socket(raw, server_hostname="localhost")
        conn.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                     % path.encode())
        data = b""
        while len(data) < 65536:
            chunk = conn.recv(4096)  # the alert raises here
            if not chunk:
                break
            data += chunk
        return "answered" if data else "closed", data
    except ssl.SSLError as error:
        return error.reason, b""
    except OSError as error:
        return type(error).__name__, b""
    finally:
        raw.close()


def test_refused_handshakes(site, pki):  # noqa: F811
    kinds = list(KINDS)
    plan = [(kinds[n % len(kinds)], "/instances/%s" % uuid.uuid4()) for n in range(ATTEMPTS)]
    contexts = {kind: context_for(pki, kind) for kind in kinds}
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda item: attempt(site.port, contexts[item[0]], item[1]),
                                plan))
    wrong = []
    for (kind, path), (what, data) in zip(plan, results):
        if what in KINDS[kind][2] and data == b"":
            figures.add("tls_refused")
        else:
            wrong.append((kind, path, what, data[:200]))
    assert not wrong, wrong

    # None of them reached the script: lighttpd logs every request it parses, and a
    # marker request made after all of them is flushed after them.
    marker = "/instances/%s" % uuid.uuid4()
    assert site.get(marker).status == 404
    lines = site.wait_access_log(marker)
    leaked = [line for line in lines for _, path in plan if path in line]
    assert not leaked, leaked
    # And lighttpd still serves the controller.
    reply = site.get("/instances")
    assert reply.status == 200, reply


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, pki):  # noqa: F811
    """A site whose config lets in only the client certificate CN "controller"."""
    api = start_site(str(tmp_path_factory.mktemp("allow-list-site")), pki,
                     api_settings={"api": {"allowed_client_names": "controller"}})
    try:
        yield api
    finally:
        stop_site(api)


@pytest.fixture(scope="module")
def intruders(tmp_path_factory, pki):  # noqa: F811
    """Client certificates from the right CA whose CN is not "controller"."""
    folder = str(tmp_path_factory.mktemp("intruders"))
    paths = {}
    for name in ("intruder", "controller2", "Controller"):
        path = os.path.join(folder, name + ".pem")
        pki_tool.write_private(path, pki_tool.pem_bundle(*pki_tool.make_leaf(
            pki.ca_cert, pki.ca_key, name, client=True)))
        paths[name] = path
    return paths


@pytest.mark.parametrize("name", ["intruder", "controller2", "Controller"])
def test_client_name_not_allowed(guarded, intruders, name):
    instance = str(uuid.uuid4())
    for path in ("/instances", "/status", "/instances/" + instance):
        reply = guarded.request(guarded.url(path), cert=intruders[name])
        assert (reply.status, reply.body) == (403, "Client certificate not allowed\n"), reply
    page = guarded.upload_file(b"HTTP/1.0 503 X\r\n\r\nintruder\n")
    reply = guarded.request("-X", "PUT", "-T", page,
                            guarded.url("/instances/%s/custom503" % instance),
                            cert=intruders[name])
    assert (reply.status, reply.body) == (403, "Client certificate not allowed\n"), reply
    reply = guarded.request("-X", "DELETE", guarded.url("/instances/" + instance),
                            cert=intruders[name])
    assert reply.status == 403, reply
    assert not os.path.exists(os.path.join(guarded.instances_dir, instance))


def test_allowed_client_name_gets_in(guarded):
    reply = guarded.get("/instances")
    assert (reply.status, reply.body) == (200, ""), reply
