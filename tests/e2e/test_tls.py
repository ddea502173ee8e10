"""Mutual TLS: what lighttpd refuses never reaches the API script.

Each refused attempt asks for its own unique path. lighttpd logs every HTTP request
it parses (even those it answers itself) in the access log, so a path that never
shows there was never handed to the CGI script. The access log is buffered: the
proof waits for a valid "marker" request made after all attempts to be flushed.
Between a marker made before the attempts and that one, the only lines allowed are
lighttpd's per-connection "PRI * HTTP/2.0" entries, with no client user: no request.
"""
import http.client
import ssl
import uuid
import warnings

import pytest

from .helpers import ACCESS_LINE, Reply, http_get

TLS11_CURL = ["--tlsv1.1", "--tls-max", "1.1", "--ciphers", "DEFAULT:@SECLEVEL=0"]

# name: (client certificate, TLS 1.1 only, what curl reports, Python's ssl reason,
#        what lighttpd's error log says)
TLS_CASES = {
    "no-client-cert": (None, False, "alert certificate required",
                       "TLSV13_ALERT_CERTIFICATE_REQUIRED", "peer did not return a certificate"),
    "other-ca": ("other_ca_client", False, "alert unknown ca",
                 "TLSV1_ALERT_UNKNOWN_CA", "unable to get local issuer certificate"),
    "expired": ("expired_client", False, "alert certificate expired",
                "SSLV3_ALERT_CERTIFICATE_EXPIRED", "certificate has expired"),
    "tls1.1": ("client", True, "alert protocol version",
               "TLSV1_ALERT_PROTOCOL_VERSION", "unsupported protocol"),
}
PLAIN_HTTP_LOG = "http request"  # OpenSSL: an HTTP request sent to the TLS port
ALL_CASES = list(TLS_CASES) + ["plain-http"]
CLIENTS = ["curl", "python"]


def _python_context(pki, cert, tls11):
    context = ssl.create_default_context(cafile=pki.ca)
    if cert:
        context.load_cert_chain(cert)
    if tls11:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1_1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        # OpenSSL 3's default security level refuses TLS 1.1 on the client side; the
        # refusal under test must be the server's.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _attempt(api, pki, case, client, path):
    if case == "plain-http":
        if client == "curl":
            return api.run_curl("http://127.0.0.1:%d%s" % (api.port, path), cert=None, ca=None)
        try:
            return http_get(api.port, path)
        except Exception as error:
            return error
    cert_name, tls11, _, _, _ = TLS_CASES[case]
    cert = getattr(pki, cert_name) if cert_name else None
    if client == "curl":
        return api.run_curl(*(TLS11_CURL if tls11 else []), api.url(path), cert=cert)
    try:
        return http_get(api.port, path, context=_python_context(pki, cert, tls11))
    except Exception as error:
        return error


class Attempt:
    def __init__(self, path, outcome, error_log):
        self.path = path
        self.outcome = outcome
        self.error_log = error_log


@pytest.fixture(scope="module")
def attempts(api, pki):
    start = "/instances/%s" % uuid.uuid4()
    start_reply = api.get(start)
    results = {}
    for case in ALL_CASES:
        expected_log = PLAIN_HTTP_LOG if case == "plain-http" else TLS_CASES[case][4]
        for client in CLIENTS:
            path = "/instances/%s" % uuid.uuid4()
            offset = api.error_log_size()
            outcome = _attempt(api, pki, case, client, path)
            results[case, client] = Attempt(path, outcome,
                                            api.error_log_since(offset, wait_for=expected_log))
    end = "/instances/%s" % uuid.uuid4()
    end_reply = api.get(end)
    lines = api.wait_access_log(end)
    return {"results": results, "lines": lines, "start": (start, start_reply),
            "end": (end, end_reply)}


def _marker_line(lines, path):
    found = [line for line in lines if " %s " % path in line]
    assert len(found) == 1, found
    return lines.index(found[0]), ACCESS_LINE.match(found[0])


def test_markers_reached_the_script(attempts):
    """Control for the log checks below: a valid request shows, with its client's name."""
    for path, reply in (attempts["start"], attempts["end"]):
        assert reply.status == 404 and reply.body == "Not Found\n", reply
        _, line = _marker_line(attempts["lines"], path)
        assert line is not None
        assert line["user"] == "controller"  # REMOTE_USER: the client certificate's CN
        assert line["request"] == "GET %s HTTP/1.1" % path  # HTTP/2 is off
        assert line["status"] == "404"


def test_no_refused_attempt_reached_the_script(attempts):
    lines = attempts["lines"]
    first, _ = _marker_line(lines, attempts["start"][0])
    last, _ = _marker_line(lines, attempts["end"][0])
    # Over HTTP/1.1 nothing is logged for a connection that sent no request:
    # any line between the markers would be a refused attempt that got through.
    assert first < last
    assert lines[first + 1:last] == []


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", ALL_CASES)
def test_refused_path_never_logged(attempts, case, client):
    attempt = attempts["results"][case, client]
    assert not [line for line in attempts["lines"] if attempt.path in line]


@pytest.mark.parametrize("case", list(TLS_CASES))
def test_curl_refused_at_handshake(attempts, case):
    attempt = attempts["results"][case, "curl"]
    reply = Reply(attempt.outcome)
    assert reply.returncode in (35, 56), reply  # handshake failed / read failed on an alert
    assert reply.status == 0 and reply.body == "", reply
    assert TLS_CASES[case][2] in reply.stderr, reply


@pytest.mark.parametrize("case", list(TLS_CASES))
def test_python_refused_at_handshake(attempts, case):
    outcome = attempts["results"][case, "python"].outcome
    assert isinstance(outcome, ssl.SSLError), outcome
    assert outcome.reason == TLS_CASES[case][3], outcome


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", ALL_CASES)
def test_lighttpd_logged_the_refusal(attempts, case, client):
    attempt = attempts["results"][case, client]
    expected = PLAIN_HTTP_LOG if case == "plain-http" else TLS_CASES[case][4]
    assert "(mod_openssl.c" in attempt.error_log
    assert expected in attempt.error_log, attempt.error_log


def _no_api_answer(status, body):
    """lighttpd may close, or answer plain HTTP with its own 400: never an API body."""
    assert status in (0, 400), (status, body)
    for api_body in ("Not Found", "Invalid Request", "OK"):
        assert api_body not in body


def test_plain_http_on_the_tls_port_curl(attempts):
    reply = Reply(attempts["results"]["plain-http", "curl"].outcome)
    if reply.status == 0:
        assert reply.returncode == 52, reply  # "Empty reply from server": lighttpd closed
    _no_api_answer(reply.status, reply.body)


def test_plain_http_on_the_tls_port_python(attempts):
    outcome = attempts["results"]["plain-http", "python"].outcome
    if isinstance(outcome, Exception):
        assert isinstance(outcome, (http.client.RemoteDisconnected, ConnectionResetError)), \
            repr(outcome)
    else:
        status, _headers, body = outcome
        _no_api_answer(status, body.decode("latin-1"))


def test_python_ssl_with_the_controller_certificate(api, pki):
    context = _python_context(pki, pki.client, tls11=False)
    connection = http.client.HTTPSConnection("127.0.0.1", api.port, context=context, timeout=10)
    try:
        connection.connect()
        assert connection.sock.version() in ("TLSv1.2", "TLSv1.3")
        peer = dict(item[0] for item in connection.sock.getpeercert()["subject"])
        assert peer["commonName"] == "appliance-api"
        connection.request("GET", "/instances", headers={"Connection": "close"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
        assert response.read() == b""
    finally:
        connection.close()


def test_tls12_is_still_accepted(api):
    reply = api.request("--tlsv1.2", "--tls-max", "1.2", api.url("/instances"))
    assert reply.status == 200, reply
