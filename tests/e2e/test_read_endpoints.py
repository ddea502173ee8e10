"""The original's read endpoints, called the way its sample calls do
(`curl -H 'Expect:' -E client_cert.pem -k https://HOST/...`, with --cacert instead of -k),
over IPv4 and IPv6, through lighttpd and the CGI script."""
import json
import os
import socket
import uuid

import pytest

TEXT = "text/plain; charset=utf-8"

# The original's sample /status answer, key by key: the types it shows.
ORIGINAL_STATUS = {
    "network_tx": 12245.6, "active_node": 1, "network_rx": 20521.8666666667,
    "haproxy_count": "2", "hostname": "octavia-1.localnet", "fencing_daemon_status": "OK",
    "stunnel_count": "1", "user_cpu": 0.333333333333333, "system_cpu": 0.233333333333333,
    "software_irq": 0.0833333333333333, "load": ["0.13", "0.12", "0.13"],
}
RATES = ("network_tx", "network_rx", "user_cpu", "system_cpu", "software_irq")


@pytest.fixture(params=[False, True], ids=["ipv4", "ipv6"])
def ipv6(request):
    return request.param


@pytest.fixture
def no_instances(api):
    """These tests read an appliance with no instance (the lifecycle tests clean up theirs)."""
    present = os.listdir(api.instances_dir) if os.path.isdir(api.instances_dir) else []
    assert present == []


def sample_call(api, path, ipv6):
    return api.request("-H", "Expect:", api.url(path, ipv6))


def test_status_has_the_original_keys_and_types(api, ipv6, no_instances):
    reply = sample_call(api, "/status", ipv6)
    assert reply.status == 200, reply
    assert reply.content_type == "application/json"
    status = json.loads(reply.body)
    assert set(ORIGINAL_STATUS) <= set(status)
    for key in RATES:
        assert type(status[key]) in (int, float), key
        assert status[key] >= 0, key
    assert type(status["active_node"]) is int
    assert status["active_node"] == 1  # the only node is the active one
    assert status["haproxy_count"] == "0"
    assert status["stunnel_count"] == "0"
    assert status["hostname"] == socket.gethostname()
    assert status["fencing_daemon_status"] == "OK"  # no fencing daemon configured
    assert type(status["load"]) is list and len(status["load"]) == 3
    for figure in status["load"]:
        assert type(figure) is str
        assert float(figure) >= 0
    for key, value in ORIGINAL_STATUS.items():
        if key not in RATES:
            assert type(status[key]) is type(value), key


def test_service_status_lists_nothing_without_instances(api, ipv6, no_instances):
    reply = sample_call(api, "/service_status", ipv6)
    assert reply.status == 200, reply
    assert reply.content_type == TEXT
    assert reply.body == ""


def test_instances_is_empty_without_instances(api, ipv6, no_instances):
    reply = sample_call(api, "/instances", ipv6)
    assert reply.status == 200, reply
    assert reply.content_type == TEXT
    assert reply.body == ""


def test_unknown_instance_is_not_found(api, ipv6):
    reply = sample_call(api, "/instances/%s" % uuid.uuid4(), ipv6)
    assert reply.status == 404, reply
    assert reply.content_type == TEXT
    assert reply.body == "Not Found\n"


INSTANCE = "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c"
INVALID = [
    pytest.param([], "/nope", id="unknown-url"),
    pytest.param([], "/", id="root"),
    pytest.param([], "/status/", id="trailing-slash"),
    pytest.param([], "/instances/" + INSTANCE + "/nope", id="unknown-resource"),
    pytest.param([], "/instances/not-a-uuid", id="not-a-uuid"),
    pytest.param([], "/instances/" + INSTANCE.upper(), id="upper-case-uuid"),
    pytest.param([], "/instances/{%s}" % INSTANCE, id="braced-uuid"),
    pytest.param([], "/instances/" + INSTANCE + "/certificates/.hidden.pem", id="dot-filename"),
    pytest.param([], "/instances/" + INSTANCE + "/certificates/cert.crt", id="not-pem"),
    pytest.param(["-X", "DELETE"], "/status", id="DELETE-status"),
    pytest.param(["-X", "PUT", "--data-binary", "x"], "/status", id="PUT-status"),
    pytest.param(["-X", "POST", "--data-binary", "x"], "/instances", id="POST-instances"),
    pytest.param(["-X", "PATCH"], "/service_status", id="PATCH-service_status"),
    pytest.param(["-X", "PUT", "--data-binary", "x"], "/instances", id="PUT-instances"),
    pytest.param(["-X", "PUT", "--data-binary", "x"], "/instances/" + INSTANCE, id="PUT-instance"),
    pytest.param(["-X", "DELETE"], "/instances", id="DELETE-instances"),
]


@pytest.mark.parametrize("method, path", INVALID)
def test_invalid_request(api, ipv6, method, path):
    reply = api.request("-H", "Expect:", *method, api.url(path, ipv6))
    assert reply.status == 403, reply
    assert reply.content_type == TEXT
    assert reply.body == "Invalid Request\n"
