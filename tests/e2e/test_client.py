"""appliance_api.client against real appliances: the session's lighttpd site
(and, for Cluster, a second site of its own), real haproxy, real change
slots and topology lock. What the unit tests script, here the API answers:
the parsers read its answers, its errors map to their classes, its
keep-alive connection is reused and replaced, its 503s are waited out, its
ETag spares an upload, and a pair takes a change primary first."""
import fcntl
import hashlib
import os
import socket
import sys
import uuid

import psutil
import pytest

from .conftest import devsite, pki_tool
from .helpers import (ACCESS_LINE, Api, daemons_under, eventually, free_port, haproxy_template,
                      http_get)

from appliance_api.client import (UNCHANGED, ApiBusy, Cluster, ClusterFailed, ApiConflict,
                                  ApiInvalidRequest, ApiNotFound, ApiTooLarge)
from appliance_api.layout import change_slot_path, topology_lock_path

PAGE = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nback soon\n"
# The second site's {MYIP}: its haproxy binds there, so the two appliances'
# instances can share a port number on one machine, as on two.
SECOND_MYIP = "127.0.0.2"


@pytest.fixture
def appliance(api):
    appliance = api.client()
    yield appliance
    appliance.close()


@pytest.fixture(scope="module")
def second_site(tmp_path_factory, pki):
    """Another appliance: its own lighttpd, state and port, our PKI."""
    folder = str(tmp_path_factory.mktemp("second-site"))
    port = free_port()
    lighttpd_conf = devsite.write_site(
        folder, ["127.0.0.1"], port, pki.dir, sys.executable, management_address=SECOND_MYIP,
        api_settings={"daemons": {"start_timeout": "5", "stop_timeout": "3"}})
    process = devsite.start_lighttpd(lighttpd_conf, "127.0.0.1", port)
    site = Api(folder, port, pki, process)
    try:
        yield site
    finally:
        with site.client() as appliance:
            for instance in appliance.instances():
                appliance.delete_instance(instance)
        devsite.stop_lighttpd(process)
        for leftover in daemons_under(folder):
            leftover.kill()


@pytest.fixture
def pair(api, second_site):
    """A Cluster of the session's site (the primary) and the second site; the
    instance id each test uses there is deleted from both afterwards."""
    cluster = Cluster([api.client(), second_site.client()])
    cluster.instance = str(uuid.uuid4())
    yield cluster
    cluster.gather(_delete_if_present, cluster.instance).raise_for_failures()
    cluster.close()


def _delete_if_present(appliance, instance):
    try:
        appliance.delete_instance(instance)
    except ApiNotFound:
        pass


def own_connections(port):
    """This process's TCP connections to port: [(local port, status)]."""
    process = psutil.Process()
    listing = getattr(process, "net_connections", None) or process.connections
    return [(connection.laddr.port, connection.status) for connection in listing(kind="tcp")
            if connection.raddr and connection.raddr.port == port]


def requests_for(lines, path):
    """(method, status) of each access-log line for exactly path."""
    found = []
    for match in filter(None, map(ACCESS_LINE.match, lines)):
        method, target = match.group("request").split()[:2]
        if target == path:
            found.append((method, match.group("status")))
    return found


def port_free_on_both():
    """A port free on 127.0.0.1 and on the second site's {MYIP}."""
    for _ in range(20):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind((SECOND_MYIP, port))
                return port
            except OSError:
                continue
    raise RuntimeError("no port free on 127.0.0.1 and %s" % SECOND_MYIP)


def listening_socket_at(host, port):
    holder = socket.socket()
    holder.bind((host, port))
    holder.listen(1)
    return holder


def tenant_certificate(ca):
    """key + certificate for "localhost", as the API stores them."""
    from cryptography.hazmat.primitives import serialization

    cert, key = pki_tool.make_leaf(ca[0], ca[1], "localhost", server=True, sans=["localhost"])
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + \
        cert.public_bytes(serialization.Encoding.PEM)


# --- reads and a config's round trip ----------------------------------------------------

def test_every_read_parses_the_apis_answers(api, appliance, instance_id, backend):
    port = free_port()
    template = haproxy_template(port, backend.port)
    lines = appliance.put_config(instance_id, "haproxy", template)
    assert lines[:2] == ["OK", "Configuration file is valid"], lines
    prefix = "haproxy daemon for %s started (pid " % instance_id
    assert lines[2].startswith(prefix)
    pid = int(lines[2][len(prefix):-1])
    assert http_get(port)[2] == backend.body

    status = appliance.status()
    assert int(status["haproxy_count"]) >= 1 and status["instance_count"] >= 1
    assert status["topology"] == "SINGLE" and status["active_node"] == 1
    [mine] = [entry for entry in appliance.service_status() if entry.id == instance_id]
    assert mine.state == "OK"
    assert mine.services["haproxy"].running and mine.services["haproxy"].pid == pid
    assert instance_id in appliance.instances()
    assert appliance.instances() == api.instances()
    assert appliance.instance_exists(instance_id) is True
    assert appliance.instance_exists(str(uuid.uuid4())) is False
    topology = appliance.topology()
    assert (topology["topology"], topology["topology_status"]) == ("SINGLE", "OK")
    manifest = appliance.manifest()
    assert manifest["instances"][instance_id] == {
        "haproxy": hashlib.sha256(template.encode()).hexdigest()}
    described = {"id": instance_id, "status": "OK", "type": "HTTP", "haproxy": "running"}
    assert described in appliance.listeners()
    assert appliance.listener(instance_id) == described
    assert appliance.get_config(instance_id, "haproxy") == template

    assert appliance.delete_config(instance_id, "haproxy") == [
        "OK", "haproxy daemon %s killed." % instance_id]
    with pytest.raises(ApiNotFound):
        appliance.get_config(instance_id, "haproxy")


def test_ipv6_literal(api):
    with api.client("::1") as appliance:
        assert appliance.name == "[::1]:%d" % api.port
        assert appliance.topology()["topology"] == "SINGLE"


def test_custom503_and_delete_instance(appliance, instance_id):
    assert appliance.put_custom503(instance_id, PAGE) == ["OK"]
    assert appliance.get_custom503(instance_id) == PAGE.encode()
    assert appliance.delete_custom503(instance_id) == ["OK"]
    with pytest.raises(ApiNotFound):
        appliance.get_custom503(instance_id)
    appliance.put_custom503(instance_id, PAGE)
    assert appliance.delete_instance(instance_id) == ["OK"]
    assert appliance.instance_exists(instance_id) is False


# --- errors ------------------------------------------------------------------------------

def test_errors_carry_the_apis_status_reason_and_detail(appliance, instance_id):
    with pytest.raises(ApiInvalidRequest) as raised:
        appliance.instance_exists("not-an-instance")
    assert (raised.value.status, raised.value.reason) == (403, "Invalid Request")

    with pytest.raises(ApiNotFound) as raised:
        appliance.get_config(instance_id, "stunnel")
    assert (raised.value.status, raised.value.reason) == (404, "Not Found")

    with pytest.raises(ApiConflict) as raised:
        appliance.put_config(instance_id, "haproxy", "global\n    no-such-keyword\n")
    assert (raised.value.status, raised.value.reason) == (409, "Invalid configuration")
    assert "no-such-keyword" in raised.value.detail

    with pytest.raises(ApiConflict) as raised:
        appliance.put_certificate(instance_id, "localhost.pem", b"garbage\n")
    assert raised.value.reason == "File contains data that is not a PEM key or certificate"

    with pytest.raises(ApiTooLarge) as raised:
        appliance.put_custom503(instance_id, PAGE + "x" * 16384)
    assert (raised.value.status, raised.value.detail) == (
        413, "Limit for this resource: 16384 bytes")


def test_a_refused_topology_names_each_bad_parameter_and_changes_nothing(appliance):
    with pytest.raises(ApiConflict) as raised:
        appliance.set_topology("ACTIVE-STANDBY", routing_mode="SIDEWAYS", role="PRIMARY",
                               all_ips=["10.0.0.2", "nonsense"], secret="pairsecr")
    assert raised.value.reason == "Invalid request"
    detail = raised.value.detail.splitlines()
    assert "routing-mode: must be LAYER2 or ROUTED" in detail
    assert "all_ips[1]: 'nonsense' is not an IP address" in detail
    topology = appliance.topology()
    assert (topology["topology"], topology["topology_status"]) == ("SINGLE", "OK")


# --- the connection ----------------------------------------------------------------------

def unread_bytes(local_port, remote_port):
    """What the kernel holds unread for our socket local_port -> remote_port
    (/proc/net/tcp's rx_queue), or None when there is no such socket."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as file:
            next(file)
            for line in file:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == local_port and \
                        int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
                    return int(fields[4].split(":")[1], 16)
    return None


def test_one_connection_serves_every_call_and_is_replaced_once_lighttpd_closes_it(api,
                                                                                  appliance):
    appliance.status()
    [(local_port, state)] = own_connections(api.port)
    assert state == psutil.CONN_ESTABLISHED
    appliance.instances()
    appliance.topology()
    appliance.manifest()
    appliance.service_status()
    appliance.instance_exists(str(uuid.uuid4()))
    assert own_connections(api.port) == [(local_port, psutil.CONN_ESTABLISHED)]
    assert unread_bytes(local_port, api.port) == 0

    # lighttpd ends a keep-alive connection idle for 5 s (server.max-keep-alive-idle)
    # with a TLS close_notify: unread bytes on our side. (Its TCP close comes
    # about 7 s later, measured: it lingers for our close_notify.)
    assert eventually(lambda: unread_bytes(local_port, api.port), timeout=10, interval=0.1)
    assert appliance.instances() == api.instances()
    [(new_port, state)] = own_connections(api.port)
    assert new_port != local_port and state == psutil.CONN_ESTABLISHED


# --- 503: waited out ----------------------------------------------------------------

def hold_locks(paths):
    """Open and flock (exclusive) each path, as a change or a transition would."""
    held = []
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
    return held


@pytest.mark.parametrize("holder, reason, retry_after", [
    ("change slots", "Too many changes in progress; retry later", 1),
    ("topology lock", "Cluster transition in progress", 2)])
def test_a_busy_appliance_is_asked_again_after_retry_after(api, instance_id, holder, reason,
                                                           retry_after):
    """Every change slot held (the server waits change_wait, 2 s, then answers
    503), or the topology lock (503 at once); let go once the 503 is in."""
    if holder == "change slots":
        paths = [change_slot_path(api.state_dir, number) for number in range(4)]
    else:
        paths = [topology_lock_path(api.state_dir)]
    held = hold_locks(paths)
    retries = []

    def let_go(request, why, delay):
        retries.append((why, delay))
        while held:
            os.close(held.pop())

    try:
        with api.client(on_retry=let_go) as appliance:
            assert appliance.put_custom503(instance_id, PAGE) == ["OK"]
    finally:
        for fd in held:
            os.close(fd)
    [(why, delay)] = retries
    assert why == "503 " + reason
    assert retry_after <= delay <= retry_after * 1.25
    path = "/instances/%s/custom503" % instance_id
    lines = api.wait_access_log('"PUT %s HTTP/1.1" 201' % path)
    assert requests_for(lines, path) == [("PUT", "503"), ("PUT", "201")]


def test_busy_past_max_wait_is_the_answer(api, instance_id):
    held = hold_locks([topology_lock_path(api.state_dir)])
    try:
        with api.client(max_wait=1) as appliance:
            with pytest.raises(ApiBusy) as raised:
                appliance.put_custom503(instance_id, PAGE)
    finally:
        os.close(held[0])
    assert (raised.value.reason, raised.value.retry_after) == (
        "Cluster transition in progress", 2)


# --- certificates: the ETag --------------------------------------------------------------

def test_an_unchanged_certificate_is_not_sent_again(api, appliance, instance_id):
    ca = pki_tool.make_ca("tenant CA")
    first, second = tenant_certificate(ca), tenant_certificate(ca)
    assert appliance.put_certificate(instance_id, "localhost.pem", first) == ["OK"]
    assert appliance.certificate_digest(instance_id, "localhost.pem") == \
        hashlib.sha256(first).hexdigest()
    assert appliance.put_certificate(instance_id, "localhost.pem", first) == list(UNCHANGED)
    assert appliance.put_certificate(instance_id, "localhost.pem", second) == ["OK"]
    # The controller's GET: the certificate, never the key; the digest still the stored file's.
    assert appliance.get_certificate(instance_id, "localhost.pem") == \
        second[second.index(b"-----BEGIN CERTIFICATE"):]

    path = "/instances/%s/certificates/localhost.pem" % instance_id
    lines = api.wait_access_log('"GET %s HTTP/1.1" 200' % path)
    assert requests_for(lines, path) == [
        ("HEAD", "404"), ("PUT", "201"),  # first upload
        ("HEAD", "200"),                  # certificate_digest
        ("HEAD", "200"),                  # the same bytes: no PUT
        ("HEAD", "200"), ("PUT", "201"),  # changed: sent
        ("GET", "200")]
    assert appliance.certificate_digest(instance_id, "localhost.pem") == \
        hashlib.sha256(second).hexdigest()
    assert appliance.delete_certificate(instance_id, "localhost.pem") == ["OK"]
    assert appliance.certificate_digest(instance_id, "localhost.pem") is None


# --- Cluster over two real appliances ---------------------------------------------------

def test_a_change_reaches_every_appliance(pair, backend):
    port = port_free_on_both()
    template = haproxy_template(port, backend.port)
    result = pair.apply("put_config", pair.instance, "haproxy", template).raise_for_failures()
    assert [lines[:2] for lines in result.values] == [["OK", "Configuration file is valid"]] * 2
    for host in ("127.0.0.1", SECOND_MYIP):
        assert http_get(port, host=host)[2] == backend.body
    for node in pair.gather("service_status").values:
        [mine] = [entry for entry in node if entry.id == pair.instance]
        assert mine.state == "OK" and mine.services["haproxy"].running


def test_a_change_the_primary_refuses_touches_no_other_appliance(pair, second_site):
    result = pair.apply("put_config", pair.instance, "haproxy", "global\n    no-such-keyword\n")
    assert not result.ok
    assert isinstance(result[0].error, ApiConflict)
    assert result[0].error.reason == "Invalid configuration"
    assert result[1].skipped
    secondary = pair.secondaries[0]
    assert secondary.instance_exists(pair.instance) is False
    lines = second_site.wait_access_log('"GET /instances/%s HTTP/1.1" 404' % pair.instance)
    assert not [line for line in lines if "PUT /instances/" + pair.instance in line]
    with pytest.raises(ClusterFailed, match="not attempted \\(the primary failed\\): 127.0.0.1:%d"
                       % second_site.port):
        result.raise_for_failures()


def test_a_secondary_that_fails_is_reported_and_the_primary_keeps_the_change(pair, backend):
    port = port_free_on_both()
    holder = listening_socket_at(SECOND_MYIP, port)  # the port is taken on the secondary only
    try:
        result = pair.apply("put_config", pair.instance, "haproxy",
                            haproxy_template(port, backend.port))
    finally:
        holder.close()
    assert [node.ok for node in result] == [True, False]
    error = result[1].error
    assert isinstance(error, ApiConflict) and "bind" in error.detail.lower(), error
    assert http_get(port)[2] == backend.body  # the primary still serves it
    with pytest.raises(ClusterFailed) as raised:
        result.raise_for_failures()
    assert str(raised.value).startswith("%s: PUT /instances/%s/haproxy on %s: 409 " % (
        pair.secondaries[0].name, pair.instance, pair.secondaries[0].name))


def test_set_topology_starts_a_change(second_site):
    """A valid POST on the second site (SINGLE again: nothing else moves)."""
    with second_site.client() as appliance:
        assert appliance.set_topology("SINGLE") == ["OK"]
        assert eventually(lambda: appliance.topology()["topology_status"] == "OK", 10)
        assert appliance.topology()["topology"] == "SINGLE"

