"""appliance_api.client against scripted appliances: a stdlib http.server over
mutual TLS in a thread, answering what each test lines up. No lighttpd (the
end-to-end tests have it); here every answer, drop and delay is chosen, so
the parsers, the error mapping, keep-alive, the retries and the Cluster's
order are each pinned down."""
import hashlib
import http.server
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse

import pytest

import pki as pki_tool  # tools/pki.py (conftest puts tools/ on sys.path)
from appliance_api import client
from appliance_api.client import (UNCHANGED, ApiError, Appliance, ApiBusy, Cluster, ClusterFailed,
                                  ApiConflict, ConnectionFailed, InstanceStatus, ApiInvalidRequest,
                                  ApiNotFound, ApiServerError, ServiceState, ApiTooLarge,
                                  parse_service_status)

INSTANCE = "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c"
OTHER = "635bbdc6-65cd-41fc-b879-22c02aaf8951"
TEXT = "text/plain; charset=utf-8"
# Answers a scripted appliance can give besides (status, body, headers).
DROP = "drop"  # close the connection without answering
SLOW = "slow"  # answer after 1 s
GATED_DROP = "gated drop"  # wait for the server's gate to open, then DROP


class Seen:
    def __init__(self, handler, body):
        self.method = handler.command
        self.path = handler.path
        self.body = body
        self.port = handler.client_address[1]
        self.headers = handler.headers


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as lighttpd

    def setup(self):
        self.timeout = self.server.idle_timeout
        super().setup()

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append(Seen(self, self.rfile.read(length)))
        answer = self.server.answers.pop(0) if self.server.answers else (200, "OK\n")
        if answer == GATED_DROP:
            self.server.gate.wait(5)
            answer = DROP
        if answer == DROP:
            self.close_connection = True
            return
        if answer == SLOW:
            time.sleep(1)
            answer = (200, "OK\n")
        status, body, headers = (answer + ({},))[:3]
        body = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        headers = dict({"Content-Type": TEXT}, **headers)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_DELETE = do_POST = answer

    def log_message(self, *args):
        pass


class ScriptedAppliance(http.server.ThreadingHTTPServer):
    """answers: what the next requests get, in order (then 200 OK); seen: what came."""
    daemon_threads = True

    def __init__(self, pki, host="127.0.0.1"):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), ScriptedHandler)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.server)
        self.context.load_verify_locations(pki.ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.answers, self.seen = [], []
        self.gate = threading.Event()
        self.idle_timeout = None
        self.pki = pki

    def get_request(self):
        sock, address = super().get_request()
        sock.settimeout(5)
        # Headers and body go out in two writes: without this, Nagle's
        # algorithm and the client's delayed ACK cost 40 ms an answer.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.context.wrap_socket(sock, server_side=True), address

    @property
    def port(self):
        return self.server_address[1]

    def client(self, address=None, **settings):
        settings = dict({"backoff": 0.01, "timeout": 5}, **settings)
        return Appliance(address or self.server_address[0], self.port, ca=self.pki.ca,
                         cert=self.pki.client, **settings)

    def ports(self):
        return [seen.port for seen in self.seen]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("pki"))
    pki_tool.generate(folder)
    names = {name: os.path.join(folder, name + ".pem") for name in ("ca", "server", "client")}
    return type("Pki", (), names)


def start(pki, host="127.0.0.1"):
    server = ScriptedAppliance(pki, host)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server


@pytest.fixture
def appliance_server(pki):
    server = start(pki)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def retries():
    """on_retry's calls: (request, reason, delay)."""
    return []


# --- parsing -----------------------------------------------------------------------------

def test_service_status_reads_the_layout_handlers_status_writes():
    text = "".join(line + "\n" for line in [
        "%-52s%s" % (INSTANCE, "DEGRADED"),
        "  %-17s%s" % ("haproxy", "running (pid 4242)"),
        "  %-17s%s" % ("stunnel", "stopped"),
        "%-52s%s" % (OTHER, "OK"),  # a certificate only: no service
    ])
    assert parse_service_status(text) == [
        InstanceStatus(INSTANCE, "DEGRADED", {"haproxy": ServiceState(True, 4242),
                                              "stunnel": ServiceState(False, None)}),
        InstanceStatus(OTHER, "OK", {})]
    assert parse_service_status("") == []


@pytest.mark.parametrize("line", ["%s  FINE" % INSTANCE, "  haproxy  sleeping", "garbage"])
def test_service_status_refuses_a_layout_it_does_not_know(line):
    with pytest.raises(ValueError, match="unexpected line"):
        parse_service_status("%-52sOK\n%s\n" % (INSTANCE, line))


# --- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("status, kind", [
    (403, ApiInvalidRequest), (404, ApiNotFound), (409, ApiConflict), (413, ApiTooLarge),
    (500, ApiServerError), (503, ApiBusy), (400, ApiError), (504, ApiError)])
def test_each_status_raises_its_error_with_reason_and_detail(appliance_server, status, kind):
    appliance_server.answers = [(status, "Invalid configuration\nline 3: bad\nline 4: worse\n",
                                 {"Retry-After": "2"})]
    with pytest.raises(kind) as raised:
        appliance_server.client(retries=0).put_config(INSTANCE, "haproxy", "x")
    error = raised.value
    assert type(error) is kind
    assert (error.status, error.reason, error.detail) == \
        (status, "Invalid configuration", "line 3: bad\nline 4: worse")
    assert str(error) == "PUT /instances/%s/haproxy on 127.0.0.1:%d: %d Invalid configuration" \
        "\nline 3: bad\nline 4: worse" % (INSTANCE, appliance_server.port, status)
    if kind is ApiBusy:
        assert error.retry_after == 2


def test_an_html_page_from_lighttpd_gives_the_status_phrase(appliance_server):
    appliance_server.answers = [(413, "<html>too big</html>", {"Content-Type": "text/html"})]
    with pytest.raises(ApiTooLarge) as raised:
        appliance_server.client().put_custom503(INSTANCE, "x" * 100)
    assert (raised.value.reason, raised.value.detail) == ("Request Entity Too Large", "")


# --- one method per endpoint ------------------------------------------------------------

def test_reads_parse_their_answers(appliance_server):
    status = {"active_node": 1, "haproxy_count": "0", "load": ["0.1", "0.2", "0.3"]}
    listener = {"id": INSTANCE, "status": "OK", "type": "HTTP", "haproxy": "running"}
    appliance_server.answers = [
        (200, json.dumps(status), {"Content-Type": "application/json"}),
        (200, "%s\n%s\n" % (OTHER, INSTANCE)),
        (200, "OK\n"), (404, "Not Found\n"),
        (200, json.dumps({"topology": "SINGLE"})), (200, json.dumps({"instances": {}})),
        (200, json.dumps([listener])), (200, json.dumps(listener)),
        (200, "global\n"), (200, b"HTTP/1.1 503 x\r\n\r\n"), (200, b"PEM"),
    ]
    appliance = appliance_server.client()
    assert appliance.status() == status
    assert appliance.instances() == [OTHER, INSTANCE]
    assert appliance.instance_exists(INSTANCE) is True
    assert appliance.instance_exists(OTHER) is False
    assert appliance.topology() == {"topology": "SINGLE"}
    assert appliance.manifest() == {"instances": {}}
    assert appliance.listeners() == [listener]
    assert appliance.listener(INSTANCE) == listener
    assert appliance.get_config(INSTANCE, "haproxy") == "global\n"
    assert appliance.get_custom503(INSTANCE) == b"HTTP/1.1 503 x\r\n\r\n"
    assert appliance.get_certificate(INSTANCE, "a.pem") == b"PEM"
    assert [(s.method, s.path) for s in appliance_server.seen] == [
        ("GET", "/status"), ("GET", "/instances"), ("GET", "/instances/" + INSTANCE),
        ("GET", "/instances/" + OTHER), ("GET", "/topology"), ("GET", "/manifest"),
        ("GET", "/listeners"), ("GET", "/listeners/" + INSTANCE),
        ("GET", "/instances/%s/haproxy" % INSTANCE), ("GET", "/instances/%s/custom503" % INSTANCE),
        ("GET", "/instances/%s/certificates/a.pem" % INSTANCE)]


def test_writes_send_their_bodies_and_return_the_answers_lines(appliance_server):
    appliance_server.answers = [
        (201, "OK\nConfiguration file is valid\nhaproxy daemon for x started (pid 7)\n"),
        (200, "OK\nhaproxy daemon x killed.\n"), (201, "OK\n"), (200, "OK\n"), (201, "OK\n"),
        (200, "OK\n"), (200, "OK\nhaproxy daemon x killed.\n")]
    appliance = appliance_server.client()
    assert appliance.put_config(INSTANCE, "haproxy", "global\n") == [
        "OK", "Configuration file is valid", "haproxy daemon for x started (pid 7)"]
    assert appliance.delete_config(INSTANCE, "haproxy") == ["OK", "haproxy daemon x killed."]
    assert appliance.put_custom503(INSTANCE, b"HTTP/1.1 503 x\r\n\r\n") == ["OK"]
    assert appliance.delete_custom503(INSTANCE) == ["OK"]
    assert appliance.put_certificate(INSTANCE, "a.pem", b"PEM", force=True) == ["OK"]
    assert appliance.delete_certificate(INSTANCE, "a.pem") == ["OK"]
    assert appliance.delete_instance(INSTANCE) == ["OK", "haproxy daemon x killed."]
    assert [(s.method, s.path, s.body) for s in appliance_server.seen] == [
        ("PUT", "/instances/%s/haproxy" % INSTANCE, b"global\n"),
        ("DELETE", "/instances/%s/haproxy" % INSTANCE, b""),
        ("PUT", "/instances/%s/custom503" % INSTANCE, b"HTTP/1.1 503 x\r\n\r\n"),
        ("DELETE", "/instances/%s/custom503" % INSTANCE, b""),
        ("PUT", "/instances/%s/certificates/a.pem" % INSTANCE, b"PEM"),
        ("DELETE", "/instances/%s/certificates/a.pem" % INSTANCE, b""),
        ("DELETE", "/instances/" + INSTANCE, b"")]


def test_crt_list_calls_use_the_crt_list_url(appliance_server):
    appliance_server.answers = [(201, "OK\nhaproxy daemon for x reloaded (pid 7)\n"),
                                (200, "{INSTANCE_DIR}/certificates/a.pem x.test\n"),
                                (200, "OK\n")]
    appliance = appliance_server.client()
    assert appliance.put_crt_list(INSTANCE, "listener", "{INSTANCE_DIR}/certificates/a.pem\n") \
        == ["OK", "haproxy daemon for x reloaded (pid 7)"]
    assert appliance.get_crt_list(INSTANCE, "listener") == \
        "{INSTANCE_DIR}/certificates/a.pem x.test\n"
    assert appliance.delete_crt_list(INSTANCE, "listener") == ["OK"]
    url = "/instances/%s/crt-lists/listener" % INSTANCE
    assert [(s.method, s.path, s.body) for s in appliance_server.seen] == [
        ("PUT", url, b"{INSTANCE_DIR}/certificates/a.pem\n"), ("GET", url, b""),
        ("DELETE", url, b"")]


def test_path_segments_are_quoted(appliance_server):
    appliance_server.answers = [(403, "Invalid Request\n")]
    with pytest.raises(ApiInvalidRequest):
        appliance_server.client().get_config("../status", "haproxy")
    assert appliance_server.seen[0].path == "/instances/..%2Fstatus/haproxy"


def test_set_topology_sends_the_drafts_form(appliance_server):
    appliance = appliance_server.client()
    assert appliance.set_topology("ACTIVE-STANDBY", routing_mode="ROUTED", role="PRIMARY",
                                  ha_ip="10.0.0.5", primary_ip="10.0.0.2",
                                  all_ips=["10.0.0.2", "10.0.0.3"], secret="s3cret!&") == ["OK"]
    assert appliance.set_topology("SINGLE") == ["OK"]
    first, second = appliance_server.seen
    assert (first.method, first.path) == ("POST", "/topology")
    assert first.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert urllib.parse.parse_qsl(first.body.decode()) == [
        ("topology", "ACTIVE-STANDBY"), ("routing-mode", "ROUTED"), ("role", "PRIMARY"),
        ("ha_ip", "10.0.0.5"), ("primary_ip", "10.0.0.2"), ("secret", "s3cret!&"),
        ("all_ips[0]", "10.0.0.2"), ("all_ips[1]", "10.0.0.3")]
    assert second.body == b"topology=SINGLE"


# --- certificates: the ETag ------------------------------------------------------------

@pytest.mark.parametrize("head, uploaded", [
    ((200, "", {"ETag": '"%s"' % hashlib.sha256(b"PEM").hexdigest()}), False),
    ((200, "", {"ETag": '"%s"' % hashlib.sha256(b"OLD").hexdigest()}), True),
    ((404, ""), True)], ids=["same", "changed", "absent"])
def test_put_certificate_sends_only_what_the_appliance_lacks(appliance_server, head, uploaded):
    appliance_server.answers = [head, (201, "OK\n")]
    lines = appliance_server.client().put_certificate(INSTANCE, "a.pem", b"PEM")
    methods = [seen.method for seen in appliance_server.seen]
    if uploaded:
        assert (lines, methods) == (["OK"], ["HEAD", "PUT"])
    else:
        assert (lines, methods) == (list(UNCHANGED), ["HEAD"])


def test_forced_put_certificate_does_not_ask(appliance_server):
    appliance_server.answers = [(201, "OK\n")]
    appliance_server.client().put_certificate(INSTANCE, "a.pem", b"PEM", force=True)
    assert [seen.method for seen in appliance_server.seen] == ["PUT"]


# --- the connection ----------------------------------------------------------------------

def test_calls_share_one_connection(appliance_server):
    appliance = appliance_server.client()
    for _ in range(3):
        appliance.instances()
    appliance.put_config(INSTANCE, "haproxy", "x")
    assert len(set(appliance_server.ports())) == 1


def test_ipv6_literals_work(pki):
    server = start(pki, "::1")
    try:
        assert server.client("::1").instances() == ["OK"]
        assert server.client("[::1]").name == "[::1]:%d" % server.port
        assert server.client("[::1]").instances() == ["OK"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_connection_the_server_closed_while_idle_is_replaced(appliance_server, retries):
    appliance_server.idle_timeout = 0.2
    appliance = appliance_server.client(on_retry=lambda *call: retries.append(call))
    appliance.instances()
    time.sleep(0.6)
    appliance.instances()
    assert len(appliance_server.seen) == 2  # seen closed before the request: nothing lost
    assert len(set(appliance_server.ports())) == 2
    assert retries == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_kept_connection_dropped_under_a_request_is_retried_once_at_once(
        appliance_server, retries, method):
    """The race the readable check cannot see: the server closes just as the request goes."""
    appliance_server.answers = [(200, "OK\n"), DROP, (200, "OK\n")]
    appliance = appliance_server.client(on_retry=lambda *call: retries.append(call))
    appliance.instances()
    assert appliance.request(method, "/instances/" + INSTANCE).lines == ["OK"]
    first, dropped, again = appliance_server.seen
    assert (dropped.method, again.method) == (method, method)
    assert first.port == dropped.port != again.port
    assert retries == []


def test_a_post_goes_on_a_new_connection_and_is_not_retried_once_sent(appliance_server):
    appliance_server.answers = [(200, "OK\n"), (200, "OK\n"), DROP]
    appliance = appliance_server.client()
    appliance.instances()
    appliance.set_topology("SINGLE")
    with pytest.raises(ConnectionFailed, match="not retried: the appliance may have acted"):
        appliance.set_topology("SINGLE")
    methods = [seen.method for seen in appliance_server.seen]
    assert methods == ["GET", "POST", "POST"]
    assert len(set(appliance_server.ports())) == 3


def test_a_read_timeout_is_not_retried(appliance_server):
    appliance_server.answers = [SLOW]
    with pytest.raises(ConnectionFailed, match="no answer within 0.3 s") as raised:
        appliance_server.client(timeout=0.3).put_config(INSTANCE, "haproxy", "x")
    assert raised.value.attempts == 1
    assert len(appliance_server.seen) == 1


def test_the_connect_timeout_is_short_and_the_answer_timeout_long(appliance_server):
    """A change may take the appliance many seconds; a connect must not."""
    appliance_server.answers = [SLOW]
    appliance = appliance_server.client(timeout=5, connect_timeout=0.2)
    appliance.put_config(INSTANCE, "haproxy", "x")  # answered after 1 s: past connect_timeout
    assert appliance._connection.sock.gettimeout() == 5
    assert appliance._connection.timeout == 0.2


def test_a_delete_whose_answer_was_lost_is_done_when_the_retry_finds_nothing(appliance_server):
    appliance_server.answers = [DROP, (404, "Not Found\n")]
    appliance = appliance_server.client()
    assert appliance.delete_instance(INSTANCE)[0] == "OK"
    assert [seen.method for seen in appliance_server.seen] == ["DELETE", "DELETE"]
    # Without a lost answer, a 404 is a 404.
    appliance_server.answers = [(404, "Not Found\n")]
    with pytest.raises(ApiNotFound):
        appliance.delete_instance(INSTANCE)


class SignallingLock:
    """A lock that says when a thread starts waiting for it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.waiting = threading.Event()

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            self.waiting.set()
        return self.lock.__enter__()

    def __exit__(self, *exc_info):
        return self.lock.__exit__(*exc_info)


def test_another_threads_lost_answer_does_not_make_a_404_delete_done(appliance_server):
    """Thread A's DELETE loses its answer and is retried while thread B's
    DELETE of a missing instance waits for the connection: B's 404 stays a 404."""
    appliance_server.answers = [(200, "OK\n"), GATED_DROP, (200, "OK\n"),
                                (404, "Not Found\n")]
    appliance = appliance_server.client()
    appliance.instances()  # a kept-alive connection: A's drop is retried at once
    appliance._lock = SignallingLock()
    outcome = {}

    def delete_other():
        try:
            outcome["b"] = appliance.delete_instance(OTHER)
        except ApiNotFound as error:
            outcome["b"] = error

    first = threading.Thread(target=lambda: outcome.update(a=appliance.delete_instance(INSTANCE)))
    first.start()
    while len(appliance_server.seen) < 2:  # A's DELETE is at the server, holding the lock
        time.sleep(0.01)
    second = threading.Thread(target=delete_other)
    second.start()
    assert appliance._lock.waiting.wait(5)  # B waits for the connection
    appliance_server.gate.set()
    first.join(10)
    second.join(10)
    assert outcome["a"] == ["OK"]
    assert isinstance(outcome["b"], ApiNotFound), outcome["b"]
    assert [seen.path for seen in appliance_server.seen][1:] == [
        "/instances/" + INSTANCE, "/instances/" + INSTANCE, "/instances/" + OTHER]


def test_the_idle_check_works_past_descriptor_1024():
    """select() refuses descriptors past 1024; a controller holding a fleet's
    connections has that many."""
    import fcntl
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The tests run as root (make test installs packages): the hard limit may rise.
    wanted_hard = hard if hard == resource.RLIM_INFINITY else max(hard, 1600)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1600), wanted_hard))
    ours, theirs = socket.socketpair()
    high = socket.socket(fileno=fcntl.fcntl(ours.fileno(), fcntl.F_DUPFD_CLOEXEC, 1500))
    try:
        assert high.fileno() >= 1500
        assert client.appliance._closed_by_peer(high) is False
        theirs.close()  # the peer's close: readable (EOF)
        assert client.appliance._closed_by_peer(high) is True
    finally:
        high.close()
        ours.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_appliance_another_ca_signed_is_refused_at_once(appliance_server, tmp_path, retries):
    from cryptography.hazmat.primitives.serialization import Encoding

    other_ca, _key = pki_tool.make_ca("some other CA")
    ca = tmp_path / "other-ca.pem"
    ca.write_bytes(other_ca.public_bytes(Encoding.PEM))
    appliance = Appliance("127.0.0.1", appliance_server.port, ca=str(ca),
                          cert=appliance_server.pki.client,
                          on_retry=lambda *call: retries.append(call))
    with pytest.raises(ConnectionFailed, match="the appliance's certificate") as raised:
        appliance.status()
    assert (raised.value.attempts, retries) == (1, [])


# --- retries -------------------------------------------------------------------------

def refused_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("method", ["GET", "PUT", "POST"])
def test_a_refused_connection_is_retried_with_doubling_waits(pki, retries, method):
    """Even a POST: a connection never opened carried nothing."""
    appliance = Appliance("127.0.0.1", refused_port(), ca=pki.ca, cert=pki.client, retries=3,
                          backoff=0.01, on_retry=lambda *call: retries.append(call))
    with pytest.raises(ConnectionFailed, match="ConnectionRefusedError") as raised:
        appliance.request(method, "/topology", b"topology=SINGLE" if method == "POST" else None)
    assert raised.value.attempts == 4
    delays = [delay for _request, _reason, delay in retries]
    for delay, base in zip(delays, (0.01, 0.02, 0.04)):
        assert base <= delay <= base * (1 + client.appliance.JITTER)
    assert len(delays) == 3


def test_a_dropped_request_on_a_new_connection_is_retried_after_a_wait(appliance_server,
                                                                       retries):
    appliance_server.answers = [DROP, (201, "OK\n")]
    appliance = appliance_server.client(on_retry=lambda *call: retries.append(call))
    assert appliance.put_config(INSTANCE, "haproxy", "x") == ["OK"]
    assert [seen.method for seen in appliance_server.seen] == ["PUT", "PUT"]
    assert len(retries) == 1 and "RemoteDisconnected" in retries[0][1]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST"])
def test_busy_is_retried(appliance_server, retries, method):
    """503 means the appliance did nothing: safe to repeat, a POST too."""
    busy = (503, "Too many changes in progress; retry later\n4 changes run at once\n",
            {"Retry-After": "0"})
    appliance_server.answers = [busy, busy, (200, "OK\n")]
    appliance = appliance_server.client(on_retry=lambda *call: retries.append(call))
    assert appliance.request(method, "/topology", b"x").lines == ["OK"]
    assert len(appliance_server.seen) == 3
    assert [reason for _request, reason, _delay in retries] == \
        ["503 Too many changes in progress; retry later"] * 2


def test_retry_after_is_honoured(appliance_server, retries):
    appliance_server.answers = [(503, "Cluster transition in progress\n", {"Retry-After": "1"})]
    appliance = appliance_server.client(on_retry=lambda *call: retries.append(call))
    started = time.monotonic()
    appliance.delete_instance(INSTANCE)
    assert time.monotonic() - started >= 1
    [(_request, reason, delay)] = retries
    assert reason == "503 Cluster transition in progress"
    assert delay >= 1 and delay <= 1 + client.appliance.JITTER  # the server's Retry-After, not the 0.01 s backoff
    assert [seen.method for seen in appliance_server.seen] == ["DELETE", "DELETE"]


def test_retries_are_bounded_in_number(appliance_server):
    appliance_server.answers = [(503, "Busy\n", {"Retry-After": "0"})] * 5
    with pytest.raises(ApiBusy):
        appliance_server.client(retries=2).delete_instance(INSTANCE)
    assert len(appliance_server.seen) == 3


def test_retries_are_bounded_in_time(appliance_server, retries):
    """A wait that would end past max_wait is not started: the 503 is the answer."""
    appliance_server.answers = [(503, "Cluster transition in progress\n", {"Retry-After": "5"})]
    started = time.monotonic()
    with pytest.raises(ApiBusy) as raised:
        appliance_server.client(max_wait=1).put_custom503(INSTANCE, "x")
    assert time.monotonic() - started < 0.9
    assert raised.value.retry_after == 5
    assert (len(appliance_server.seen), retries) == (1, [])


def test_other_errors_are_not_retried(appliance_server):
    appliance_server.answers = [(409, "Invalid configuration\n"), (500, "Internal error\n")]
    appliance = appliance_server.client()
    with pytest.raises(ApiConflict):
        appliance.put_config(INSTANCE, "haproxy", "x")
    with pytest.raises(ApiServerError):
        appliance.instances()
    assert len(appliance_server.seen) == 2


# --- Cluster ---------------------------------------------------------------------------

class Node:
    """An appliance stand-in that records when its calls start and end."""

    def __init__(self, name, events, fails=False, barrier=None):
        self.name, self.events, self.fails, self.barrier = name, events, fails, barrier
        self.calls = []

    def put_config(self, instance, service, template):
        self.events.append(("start", self.name))
        self.calls.append((instance, service, template))
        if self.barrier:
            self.barrier.wait()  # returns only once every secondary is inside at once
        self.events.append(("end", self.name))
        if self.fails:
            raise ApiConflict(409, "Invalid configuration", "line 1: no", "PUT x on " + self.name)
        return ["OK"]

    def close(self):
        pass


def test_cluster_changes_the_primary_first_then_the_others_at_once():
    events = []
    barrier = threading.Barrier(2, timeout=5)
    primary = Node("primary", events)
    others = [Node("second", events, barrier=barrier), Node("third", events, barrier=barrier)]
    result = Cluster([primary] + others).apply("put_config", INSTANCE, "haproxy", "x")
    assert result.ok and result.raise_for_failures() is result
    assert result.values == [["OK"]] * 3
    assert events[:2] == [("start", "primary"), ("end", "primary")]
    assert {name for _event, name in events[2:]} == {"second", "third"}


def test_a_failed_primary_stops_the_change():
    events = []
    primary, secondary = Node("primary", events, fails=True), Node("second", events)
    result = Cluster([primary, secondary]).apply("put_config", INSTANCE, "haproxy", "x")
    assert not result.ok
    assert isinstance(result[0].error, ApiConflict) and not result[0].skipped
    assert result[1].skipped and secondary.calls == []
    with pytest.raises(ClusterFailed) as raised:
        result.raise_for_failures()
    assert str(raised.value) == ("primary: PUT x on primary: 409 Invalid configuration\n"
                                 "line 1: no\nnot attempted (the primary failed): second")
    assert raised.value.result is result


def test_a_failed_secondary_is_reported_and_undoes_nothing():
    events = []
    primary = Node("primary", events)
    failing, fine = Node("second", events, fails=True), Node("third", events)
    result = Cluster([primary, failing, fine]).apply(
        lambda node, template: node.put_config(INSTANCE, "haproxy", template), "x")
    assert [node.ok for node in result] == [True, False, True]
    assert result.failures == [result[1]] and isinstance(result[1].error, ApiConflict)
    assert result[2].value == ["OK"]
    assert primary.calls == [(INSTANCE, "haproxy", "x")]  # once: nothing undone
    with pytest.raises(ClusterFailed, match="^second: PUT x on second: 409"):
        result.raise_for_failures()


def test_cluster_over_scripted_appliances(pki):
    """Real connections: the primary's 409 leaves the secondary without a request;
    gather reads both."""
    primary, secondary = start(pki), start(pki)
    try:
        primary.answers = [(409, "Invalid configuration\n[ALERT] parsing\n")]
        cluster = Cluster([primary.client(), secondary.client()])
        result = cluster.apply("put_config", INSTANCE, "haproxy", "x")
        assert result[0].error.detail == "[ALERT] parsing"
        assert result[1].skipped and secondary.seen == []
        for server in (primary, secondary):
            server.answers = [(200, json.dumps({"topology": "SINGLE"}))]
        assert cluster.gather("topology").values == [{"topology": "SINGLE"}] * 2
        cluster.close()
    finally:
        for server in (primary, secondary):
            server.shutdown()
            server.server_close()
