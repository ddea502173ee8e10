"""GET /listeners and /listeners/:listener through lighttpd, with real daemons:
the exact JSON for an HTTP, a TCP, an HTTPS-through-stunnel and an
HTTPS-by-haproxy listener, and what a killed daemon turns it into."""
import json
import os
import signal
import uuid

import pytest

from .helpers import (eventually, free_port, haproxy_template, http_get, pid_gone,
                      stunnel_template)


def tcp_template(port, backend_port):
    return haproxy_template(port, backend_port).replace("mode http", "mode tcp")


def haproxy_tls_template(port, backend_port):
    return haproxy_template(port, backend_port).replace(
        "bind {MYIP}:%d\n" % port,
        "bind {MYIP}:%d ssl crt {INSTANCE_DIR}/certificates/localhost.pem\n" % port)


@pytest.fixture(scope="module")
def listeners(api, backend, listener_pki):
    """Made through the controller's client library (appliance_api.client)."""
    ids = {kind: str(uuid.uuid4()) for kind in ("http", "tcp", "stunnel", "haproxy-tls")}
    ports = {kind: free_port() for kind in ids}
    appliance = api.client()
    try:
        appliance.put_config(ids["http"], "haproxy", haproxy_template(ports["http"], backend.port))
        appliance.put_config(ids["tcp"], "haproxy", tcp_template(ports["tcp"], backend.port))
        stunnel = ids["stunnel"]
        appliance.put_certificate(stunnel, "localhost.pem", listener_pki.upload)
        appliance.put_config(stunnel, "haproxy", haproxy_template(ports["stunnel"], backend.port))
        tls_port = free_port()
        appliance.put_config(stunnel, "stunnel", stunnel_template(tls_port, ports["stunnel"]))
        terminated = ids["haproxy-tls"]
        appliance.put_certificate(terminated, "localhost.pem", listener_pki.upload)
        appliance.put_config(terminated, "haproxy",
                             haproxy_tls_template(ports["haproxy-tls"], backend.port))
        # Both TLS listeners really end TLS with the uploaded certificate.
        for port in (tls_port, ports["haproxy-tls"]):
            assert http_get(port, context=listener_pki.context)[2] == b"backend-ok"
        yield ids
    finally:
        for instance in ids.values():
            appliance.request("DELETE", "/instances/" + instance)
        appliance.close()


def get_json(api, path):
    reply = api.get(path)
    assert reply.status == 200, reply
    assert reply.content_type == "application/json"
    return json.loads(reply.body)


def test_each_type_exactly(api, listeners):
    expected = {
        listeners["http"]: {"id": listeners["http"], "status": "OK", "type": "HTTP",
                            "haproxy": "running"},
        listeners["tcp"]: {"id": listeners["tcp"], "status": "OK", "type": "TCP",
                           "haproxy": "running"},
        listeners["stunnel"]: {"id": listeners["stunnel"], "status": "OK", "type": "HTTPS",
                               "haproxy": "running", "stunnel": "running"},
        listeners["haproxy-tls"]: {"id": listeners["haproxy-tls"], "status": "OK",
                                   "type": "HTTPS", "haproxy": "running"},
    }
    assert get_json(api, "/listeners") == [expected[i] for i in sorted(expected)]
    for instance, listener in expected.items():
        assert get_json(api, "/listeners/" + instance) == listener
    with api.client() as appliance:  # the client library parses the same
        assert appliance.listeners() == [expected[i] for i in sorted(expected)]
        assert appliance.listener(listeners["tcp"]) == expected[listeners["tcp"]]


def test_a_killed_stunnel_degrades_its_listener(api, listeners):
    instance = listeners["stunnel"]
    pid = api.service_pid(instance, "stunnel")
    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: pid_gone(pid))
    assert get_json(api, "/listeners/" + instance) == {
        "id": instance, "status": "DEGRADED", "type": "HTTPS",
        "haproxy": "running", "stunnel": "stopped"}
    # /service_status says the same in its own words.
    assert "%-52sDEGRADED" % instance in api.service_status().splitlines()


def test_unknown_listener_is_404_and_a_bad_id_403(api, listeners):
    assert api.get("/listeners/" + str(uuid.uuid4())).status == 404
    assert api.get("/listeners/NOT-A-UUID").status == 403
