"""POST /topology's validation and GET /topology, in process. The pair
itself (keepalived, failover) is tests/e2e/test_pair.py."""
import fcntl
import json
import os

import pytest

from appliance_api.errors import Conflict
from appliance_api.topology import parse_form

OWN = {"10.0.0.2", "127.0.0.1"}
SAMPLE = ("topology=ACTIVE-STANDBY&routing-mode=ROUTED&role=PRIMARY&ha_ip=10.0.0.5"
          "&primary_ip=10.0.0.2&all_ips%5B0%5D=10.0.0.2&all_ips%5B1%5D=10.0.0.3"
          "&secret=supersecret")


def test_the_drafts_sample_call_is_valid():
    wanted = parse_form(SAMPLE.encode(), OWN)
    assert {k: wanted[k] for k in ("topology", "routing-mode", "role", "ha_ip", "primary_ip",
                                   "all_ips", "secret")} == {
        "topology": "ACTIVE-STANDBY", "routing-mode": "ROUTED", "role": "PRIMARY",
        "ha_ip": "10.0.0.5", "primary_ip": "10.0.0.2", "all_ips": ["10.0.0.2", "10.0.0.3"],
        "secret": "supersecret"}


def replace(form, field, value):
    pairs = [p for p in form.split("&") if not p.startswith(field + "=")]
    return "&".join(pairs + ([field + "=" + value] if value is not None else []))


@pytest.mark.parametrize("form, line", [
    (replace(SAMPLE, "topology", "MESH"),
     "topology: must be SINGLE, ACTIVE-STANDBY or ACTIVE-ACTIVE"),
    (replace(SAMPLE, "topology", None), "topology: must be SINGLE, ACTIVE-STANDBY or"),
    (replace(SAMPLE, "topology", "ACTIVE-ACTIVE"),
     "topology: ACTIVE-ACTIVE is not supported on this appliance"),
    (replace(SAMPLE, "role", "LEADER"), "role: must be PRIMARY or SECONDARY"),
    (replace(SAMPLE, "role", "SECONDARY"),
     "role: SECONDARY, but this appliance is primary_ip 10.0.0.2"),
    (replace(SAMPLE, "routing-mode", "BGP"), "routing-mode: must be LAYER2 or ROUTED"),
    (replace(SAMPLE, "ha_ip", "10.0.0.300"), "ha_ip: '10.0.0.300' is not an IP address"),
    (replace(SAMPLE, "ha_ip", "10.0.0.3"), "ha_ip: 10.0.0.3 must not be one of all_ips"),
    (replace(SAMPLE, "ha_ip", None), "ha_ip: required for ACTIVE-STANDBY"),
    (replace(SAMPLE, "primary_ip", "10.0.0.9"), "primary_ip: 10.0.0.9 is not one of all_ips"),
    (replace(SAMPLE, "primary_ip", "nope"), "primary_ip: 'nope' is not an IP address"),
    (replace(SAMPLE, "primary_ip", None), "primary_ip: required for ACTIVE-STANDBY"),
    (replace(SAMPLE, "secret", None), "secret: required for ACTIVE-STANDBY"),
    (replace(SAMPLE, "secret", "two%20words"), "secret: letters, digits"),
    (replace(SAMPLE, "secret", "br%7Dace"), "secret: letters, digits"),
    (replace(SAMPLE, "all_ips%5B1%5D", "x.y"), "all_ips[1]: 'x.y' is not an IP address"),
    (replace(SAMPLE, "all_ips%5B1%5D", None), "all_ips: ACTIVE-STANDBY needs both nodes'"),
    (replace(SAMPLE, "all_ips%5B1%5D", "10.0.0.2"), "all_ips[1]: 10.0.0.2 is listed twice"),
    (SAMPLE.replace("all_ips%5B1%5D", "all_ips%5B2%5D"),
     "all_ips: indexes must run 0, 1, 2, ... without gaps"),
    (SAMPLE.replace("10.0.0.2", "10.0.0.7"),
     "all_ips: none of them is this appliance's own address"),
    (SAMPLE + "&colour=blue", "colour: unknown parameter"),
    ("topology=SINGLE&role=SECONDARY", "role: a SINGLE appliance is PRIMARY"),
])
def test_each_invalid_parameter_gets_its_own_line(form, line):
    with pytest.raises(Conflict) as refused:
        parse_form(form.encode(), OWN)
    assert refused.value.reason == "Invalid request"
    assert any(l.startswith(line) for l in refused.value.detail.splitlines()), \
        refused.value.detail


def test_several_problems_give_several_lines():
    with pytest.raises(Conflict) as refused:
        parse_form(b"topology=ACTIVE-STANDBY&role=X&routing-mode=Y", OWN)
    assert len(refused.value.detail.splitlines()) >= 5


def test_single_forgets_the_pair_fields():
    wanted = parse_form(b"topology=SINGLE", OWN)
    assert (wanted["topology"], wanted["role"], wanted["all_ips"], wanted["ha_ip"]) == (
        "SINGLE", "PRIMARY", [], "")


def test_get_topology_of_a_never_configured_appliance(app):
    shown = json.loads(app.get("/topology").text)
    assert {k: v for k, v in shown.items() if k != "hostname"} == {
        "topology": "SINGLE", "role": "PRIMARY", "primary_ip": "", "ha_ip": "", "all_ips": [],
        "routing-mode": "LAYER2", "topology_status": "OK"}


def test_post_topology_that_is_invalid_is_409_and_stores_nothing(app, state_dir):
    response = app.post("/topology", "topology=ACTIVE-ACTIVE",
                        content_type="application/x-www-form-urlencoded", expect_errors=True)
    assert response.status_int == 409
    assert response.text.startswith("Invalid request\ntopology: ACTIVE-ACTIVE is not supported")
    assert not os.path.exists(os.path.join(state_dir, "topology.json"))


def test_changes_during_a_transition_are_503_and_reads_are_not(app, state_dir, instance_id):
    lock = os.open(os.path.join(state_dir, "topology.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        for call in (lambda: app.put("/instances/%s/custom503" % instance_id, b"x",
                                     expect_errors=True),
                     lambda: app.delete("/instances/" + instance_id, expect_errors=True),
                     lambda: app.post("/topology", "topology=SINGLE", expect_errors=True)):
            response = call()
            assert response.status_int == 503
            assert response.text == "Cluster transition in progress\n"
            assert response.headers["Retry-After"] == "2"
        assert app.get("/instances").status_int == 200
        assert json.loads(app.get("/topology").text)["topology_status"] == "TOPOLOGY-CHANGE"
    finally:
        os.close(lock)
    assert json.loads(app.get("/topology").text)["topology_status"] == "OK"


@pytest.mark.parametrize("form, line", [
    # str.isdigit() takes "²"; int() does not: a 500 once.
    (SAMPLE + "&all_ips%5B%C2%B2%5D=10.0.0.4", "all_ips[²]: the index must be a number"),
    (SAMPLE + "&all_ips%5Bx%5D=10.0.0.4", "all_ips[x]: the index must be a number"),
    (SAMPLE + "&all_ips%5B01%5D=10.0.0.4", "all_ips[01]: index given twice"),
    (replace(SAMPLE, "all_ips%5B1%5D", "2001:db8::3"),
     "all_ips[1]: 2001:db8::3 is IPv6; a pair's addresses are one family"),
    (replace(SAMPLE, "ha_ip", "2001:db8::5"),
     "ha_ip: 2001:db8::5 is IPv6; a pair's addresses are one family"),
])
def test_odd_indexes_and_mixed_families_are_409(form, line):
    with pytest.raises(Conflict) as refused:
        parse_form(form.encode(), OWN)
    assert any(l.startswith(line) for l in refused.value.detail.splitlines()), \
        refused.value.detail


def test_all_ips_is_bounded_and_parsed_in_linear_time():
    import time

    from appliance_api.topology import MAX_ALL_IPS

    def form(count):
        return (SAMPLE + "".join("&all_ips%%5B%d%%5D=10.1.%d.%d" % (i, i // 250, i % 250)
                                 for i in range(2, count))).encode()

    own = {"10.0.0.2"}
    wanted = parse_form(form(MAX_ALL_IPS), own)
    assert len(wanted["all_ips"]) == MAX_ALL_IPS
    with pytest.raises(Conflict) as refused:
        parse_form(form(MAX_ALL_IPS + 1), own)
    assert refused.value.detail.splitlines()[0] == "all_ips: %d addresses, at most %d (a pair has 2 nodes)" % (
        MAX_ALL_IPS + 1, MAX_ALL_IPS)
    # 40,000 addresses took 9.6 s once (a list searched for each): refused fast now.
    started = time.monotonic()
    with pytest.raises(Conflict):
        parse_form(form(40000), own)
    assert time.monotonic() - started < 1.0


def test_so_many_unknown_parameters_give_a_bounded_answer():
    with pytest.raises(Conflict) as refused:
        parse_form(("topology=SINGLE" + "".join("&x%d=1" % i for i in range(1000))).encode(),
                   OWN)
    lines = refused.value.detail.splitlines()
    assert len(lines) == 11 and lines[-1] == "... and 990 more unknown parameters"


def test_post_topology_index_that_is_not_ascii_is_409_not_500(app, state_dir):
    response = app.post("/topology", SAMPLE + "&all_ips%5B%C2%B2%5D=10.0.0.4",
                        content_type="application/x-www-form-urlencoded", expect_errors=True)
    assert response.status_int == 409, response.text
    assert "all_ips[²]: the index must be a number" in response.text
    assert not os.path.exists(os.path.join(state_dir, "topology.json"))


def test_the_last_topology_carried_out():
    from appliance_api.topology import NEVER_CONFIGURED, carried_out

    pair = parse_form(SAMPLE.encode(), OWN)
    assert carried_out(dict(pair, status="OK"))["all_ips"] == ["10.0.0.2", "10.0.0.3"]
    # Running or FAILED: the one before, kept by the POST; none kept: SINGLE.
    single = carried_out(dict(NEVER_CONFIGURED))
    assert carried_out(dict(pair, status="FAILED", applied=single))["topology"] == "SINGLE"
    assert carried_out(dict(pair, status="TOPOLOGY-CHANGE"))["topology"] == "SINGLE"
    assert carried_out(dict(NEVER_CONFIGURED, status="FAILED",
                            applied=carried_out(dict(pair, status="OK"))))["ha_ip"] == "10.0.0.5"
