"""Fixtures for the end-to-end tests: a development PKI, the site written by
tools/devsite.py served by a real `lighttpd -D`, reached with real curl, and a
backend HTTP server for the haproxy instances the tests create.

Each request runs the CGI script with this interpreter (sys.executable: the venv's).
"""
import contextlib
import datetime
import http.server
import os
import signal
import ssl
import sys
import threading
import types
import uuid

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
TOOLS = os.path.join(ROOT, "tools")
LIB = os.path.join(ROOT, "lib")
for folder in (TOOLS, LIB):  # tools/ for devsite and pki, lib/ for appliance_api.client
    if folder not in sys.path:
        sys.path.insert(0, folder)

import devsite  # noqa: E402  (tools/devsite.py)
import pki as pki_tool  # noqa: E402  (tools/pki.py)

from .helpers import Api, accepts, daemons_under, eventually, free_port_on_both  # noqa: E402

BACKEND_BODY = b"backend-ok"


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """tools/pki.py's development PKI (ca.pem, server.pem, client.pem), plus client
    certificates the server must refuse: one from another CA, one expired."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    folder = str(tmp_path_factory.mktemp("pki"))
    assert pki_tool.generate(folder) is True
    with open(os.path.join(folder, "ca.pem"), "rb") as file:
        ca_cert = x509.load_pem_x509_certificate(file.read())
    with open(os.path.join(folder, "ca.key"), "rb") as file:
        ca_key = serialization.load_pem_private_key(file.read(), password=None)

    other_ca_cert, other_ca_key = pki_tool.make_ca("some other CA")
    other = os.path.join(folder, "other-ca-client.pem")
    pki_tool.write_private(other, pki_tool.pem_bundle(*pki_tool.make_leaf(
        other_ca_cert, other_ca_key, pki_tool.CLIENT_NAME, client=True)))

    now = datetime.datetime.now(datetime.timezone.utc)
    expired = os.path.join(folder, "expired-client.pem")
    pki_tool.write_private(expired, pki_tool.pem_bundle(*pki_tool.make_leaf(
        ca_cert, ca_key, pki_tool.CLIENT_NAME, client=True,
        not_after=now - datetime.timedelta(days=1))))

    return types.SimpleNamespace(
        dir=folder, ca=os.path.join(folder, "ca.pem"), server=os.path.join(folder, "server.pem"),
        client=os.path.join(folder, "client.pem"), other_ca_client=other,
        expired_client=expired, ca_cert=ca_cert, ca_key=ca_key)


@contextlib.contextmanager
def running_site(folder, pki, api_settings=None):
    """lighttpd serving the API on 127.0.0.1 and ::1 (a free port), state in
    <folder>/state: an Api; on the way out every instance is deleted through
    it and whatever daemon still runs under folder is killed."""
    port = free_port_on_both()
    settings = {"daemons": {"start_timeout": "5", "stop_timeout": "3"}}
    for section, values in (api_settings or {}).items():
        settings.setdefault(section, {}).update(values)
    # Short timeouts: a daemon that will not start fails a test quickly.
    lighttpd_conf = devsite.write_site(folder, ["127.0.0.1", "::1"], port, pki.dir,
                                       sys.executable, api_settings=settings)
    process = devsite.start_lighttpd(lighttpd_conf, "127.0.0.1", port)
    api_ = Api(folder, port, pki, process)
    try:
        assert eventually(lambda: accepts("::1", port), 5), "lighttpd not listening on ::1"
        yield api_
    finally:
        if process.poll() is None:
            try:  # the clean way first: what the API started, the API stops
                for instance in api_.instances():
                    api_.delete("/instances/" + instance)
            except Exception:
                pass
            devsite.stop_lighttpd(process)
        for leftover in daemons_under(folder):
            try:
                leftover.send_signal(signal.SIGKILL)
            except Exception:
                pass


@pytest.fixture(scope="session")
def api(tmp_path_factory, pki):
    """The API most tests share (running_site)."""
    with running_site(str(tmp_path_factory.mktemp("site")), pki) as api_:
        yield api_


@pytest.fixture
def private_site(tmp_path, pki):
    """A site like `api`'s on its own port with its own copy of the PKI, for a
    test that changes the API's own certificate or CA file: start(ca_pem=...)
    starts its lighttpd (optionally trusting other controller CAs), stopped at
    the end."""
    import shutil

    folder = str(tmp_path / "site")
    own_pki = str(tmp_path / "pki")
    shutil.copytree(pki.dir, own_pki)
    port = free_port_on_both()
    lighttpd_conf = devsite.write_site(folder, ["127.0.0.1"], port, own_pki, sys.executable)
    paths = types.SimpleNamespace(ca=os.path.join(own_pki, "ca.pem"),
                                  client=os.path.join(own_pki, "client.pem"),
                                  server=os.path.join(own_pki, "server.pem"))
    started = []

    def start(ca_pem=None):
        if ca_pem is not None:
            with open(paths.ca, "wb") as file:
                file.write(ca_pem)
        process = devsite.start_lighttpd(lighttpd_conf, "127.0.0.1", port)
        started.append(process)
        return Api(folder, port, paths, process)

    yield types.SimpleNamespace(start=start, pki=paths, folder=folder, port=port)
    for process in started:
        if process.poll() is None:
            devsite.stop_lighttpd(process)


@pytest.fixture
def instance_id(api):
    """A fresh instance id; whatever the test made of it is deleted through the API."""
    instance = str(uuid.uuid4())
    yield instance
    reply = api.delete("/instances/" + instance)
    assert reply.status in (200, 404), reply


class _BackendHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BACKEND_BODY)))
        self.end_headers()
        self.wfile.write(BACKEND_BODY)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def backend():
    """An HTTP server on 127.0.0.1 answering "backend-ok": the haproxy instances' server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BackendHandler)
    server.daemon_threads = True
    server.hits = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield types.SimpleNamespace(port=server.server_address[1], server=server, body=BACKEND_BODY)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def listener_pki():
    """A CA of the tenant's and a certificate for "localhost" (127.0.0.1) it signed."""
    ca_cert, ca_key = pki_tool.make_ca("tenant CA")
    cert, key = pki_tool.make_leaf(ca_cert, ca_key, "localhost", server=True,
                                   sans=["localhost", "127.0.0.1"])
    bundle = pki_tool.pem_bundle(cert, key)  # certificate, then key
    marker = b"-----END CERTIFICATE-----\n"
    cert_pem, key_pem = bundle[:bundle.index(marker) + len(marker)], \
        bundle[bundle.index(marker) + len(marker):]
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    from cryptography.hazmat.primitives.serialization import Encoding
    context = ssl.create_default_context(cadata=ca_cert.public_bytes(Encoding.PEM).decode())
    # The API's order: key first, then the certificate (then the chain).
    return types.SimpleNamespace(upload=key_pem + cert_pem, context=context)
