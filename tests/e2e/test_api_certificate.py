"""The API's own certificate, rotated over the API (PUT /certificate) on a
real lighttpd: a good one is what the next connection sees while a request
in flight finishes on the old; a bad one is a 409 and the old one is still
served; /status counts its days; and a controller CA file holding two CAs
(a rollover) lets clients of both in."""
import datetime
import hashlib
import json
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .conftest import pki_tool


def served_certificate(port, client_pem):
    """The certificate (DER) a new connection to the API is shown."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(client_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock) as tls:
            return tls.getpeercert(binary_form=True)


def api_certificate(pki, sans=("127.0.0.1",), days=100, common_name="appliance-api", ca=None):
    """(key + certificate upload, the certificate's DER), signed by the site's
    CA (or ca: (certificate, key))."""
    ca_cert, ca_key = ca or (pki.ca_cert, pki.ca_key)
    cert, key = pki_tool.make_leaf(
        ca_cert, ca_key, common_name, server=True, sans=list(sans),
        not_after=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem + cert.public_bytes(serialization.Encoding.PEM), \
        cert.public_bytes(serialization.Encoding.DER)


def days_left(api):
    reply = api.get("/status")
    assert reply.status == 200, reply
    return json.loads(reply.body)["api_certificate_days_left"]


class SlowRequest:
    """A PUT of the 503 page sent over seconds: lighttpd holds it in flight
    (it buffers the body before the CGI starts) across whatever happens meanwhile."""

    PAGE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nslow\n"

    def __init__(self, api, instance):
        context = ssl.create_default_context(cafile=api.ca)
        context.load_cert_chain(api.client_cert)
        context.check_hostname = False
        raw = socket.create_connection(("127.0.0.1", api.port), timeout=20)
        self.tls = context.wrap_socket(raw)
        self.seen = self.tls.getpeercert(binary_form=True)
        self.tls.sendall(b"PUT /instances/%s/custom503 HTTP/1.1\r\nHost: appliance\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                         % (instance.encode(), len(self.PAGE)) + self.PAGE[:10])

    def finish(self):
        self.tls.sendall(self.PAGE[10:])
        answer = b""
        while True:
            chunk = self.tls.recv(65536)
            if not chunk:
                break
            answer += chunk
        self.tls.close()
        return answer


def test_a_new_certificate_reaches_new_connections_while_one_in_flight_finishes(
        private_site, pki, instance_id):
    api = private_site.start()
    with open(private_site.pki.server, "rb") as file:
        old_der = x509.load_pem_x509_certificate(file.read()).public_bytes(
            serialization.Encoding.DER)
    assert served_certificate(api.port, api.client_cert) == old_der
    before_days = days_left(api)
    assert isinstance(before_days, int) and before_days > 700  # tools/pki.py's 825 days

    in_flight = SlowRequest(api, instance_id)
    upload, new_der = api_certificate(pki)
    reply = api.put("/certificate", upload)
    assert reply.status == 201, reply
    assert reply.lines == ["OK", "lighttpd (pid %d) serves the new certificate to new "
                                 "connections" % api.process.pid]
    assert served_certificate(api.port, api.client_cert) == new_der
    answer = in_flight.finish()
    assert answer.startswith(b"HTTP/1.1 201 "), answer
    assert in_flight.seen == old_der
    assert api.process.poll() is None  # the same lighttpd, restarted in place
    with open(private_site.pki.server, "rb") as file:
        assert hashlib.sha256(file.read()).digest() == hashlib.sha256(upload).digest()
    assert days_left(api) in (99, 100)
    # The controller's library says the same, and the API still answers it.
    with api.client() as appliance:
        assert appliance.put_api_certificate(upload)[1] == "lighttpd (pid %d) serves the new " \
            "certificate to new connections" % api.process.pid
        assert appliance.status()["api_certificate_days_left"] in (99, 100)


@pytest.mark.parametrize("case, reason", [
    ("another name", "Certificate names none of this appliance's management names"),
    ("no key", "No RSA key found"),
    ("key does not match", "Certificate and key do not match"),
    ("a CRL", "File contains data that is not a PEM key or certificate"),
    # Right name, another CA: the controllers would no longer trust the API.
    ("another CA", "Certificate is not issued by the CA of the certificate served now"),
])
def test_a_refused_certificate_is_a_409_and_the_old_one_stays(private_site, pki, case, reason):
    api = private_site.start()
    with open(private_site.pki.server, "rb") as file:
        old = file.read()
    served = served_certificate(api.port, api.client_cert)
    upload, _der = api_certificate(pki, sans=["other.example.com"], common_name="other") \
        if case == "another name" else api_certificate(pki)
    if case == "no key":
        upload = upload[upload.index(b"-----BEGIN CERTIFICATE"):]
    elif case == "key does not match":
        other, _ = api_certificate(pki)
        upload = other[:other.index(b"-----BEGIN CERTIFICATE")] + \
            upload[upload.index(b"-----BEGIN CERTIFICATE"):]
    elif case == "a CRL":
        upload = pki_tool.make_crl(pki.ca_cert, pki.ca_key)
    elif case == "another CA":
        upload, _der = api_certificate(pki, ca=pki_tool.make_ca("a CA no controller trusts"))
    reply = api.put("/certificate", upload)
    assert reply.status == 409 and reply.body.startswith(reason), reply
    with open(private_site.pki.server, "rb") as file:
        assert file.read() == old
    assert served_certificate(api.port, api.client_cert) == served


def test_a_controller_ca_file_holding_two_cas_lets_clients_of_both_in(private_site, pki, tmp_path):
    next_ca, next_key = pki_tool.make_ca("controller CA, next")
    with open(pki.ca, "rb") as file:
        current = file.read()
    api = private_site.start(ca_pem=current + next_ca.public_bytes(serialization.Encoding.PEM))
    next_client = str(tmp_path / "next-client.pem")
    pki_tool.write_private(next_client, pki_tool.pem_bundle(*pki_tool.make_leaf(
        next_ca, next_key, pki_tool.CLIENT_NAME, client=True)))
    for client in (api.client_cert, next_client):
        reply = api.request(api.url("/status"), cert=client)
        assert reply.status == 200, reply
    # A CA in neither: still refused at the handshake.
    assert api.run_curl(api.url("/status"), cert=pki.other_ca_client).returncode != 0
