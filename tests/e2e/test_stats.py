"""GET /instances/:instance/stats and GET /metrics with real lighttpd,
haproxy and traffic: counts that match the requests sent through a real
backend, totals that do not fall across a config PUT, a SIGKILL and an
`octctl start`, a stop, and a tenant whose haproxy does not answer."""
import json
import os
import signal
import sys
import time
import uuid

import pytest

from .helpers import eventually, free_port, http_get, octctl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from support import prometheus_text  # noqa: E402  (tests/support)

CLI_TIMEOUT = 0.4  # conf/appliance-api.ini's [stats] cli_timeout, which the site keeps


def tenant_config(port, tcp_port, backend_port, dead_port, comment=""):
    """An HTTP frontend to a pool of one live and one dead server, checked;
    a TCP frontend to the live one."""
    return (
        "# %s\n"
        "global\n    maxconn 100\n"
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n"
        "    timeout server 5s\n"
        "frontend web\n    bind {MYIP}:%d\n    default_backend pool\n"
        "frontend raw\n    mode tcp\n    bind {MYIP}:%d\n    default_backend raw-pool\n"
        "backend pool\n"
        "    server live.1 127.0.0.1:%d check inter 100ms fall 1 rise 1\n"
        "    server dead-1 127.0.0.1:%d check inter 100ms fall 1 rise 1\n"
        "backend raw-pool\n    mode tcp\n    server live.1 127.0.0.1:%d\n"
        % (comment, port, tcp_port, backend_port, dead_port, backend_port))


def stats(api, instance):
    reply = api.get("/instances/%s/stats" % instance)
    assert reply.status == 200 and reply.content_type == "application/json", reply
    return json.loads(reply.body)


def named(entries, name):
    return next(entry for entry in entries if entry["name"] == name)


def totals(body):
    """The kept counters of the view, by (kind, name, field)."""
    found = {}
    for frontend in body["frontends"]:
        for field in ("total_sessions", "bytes_in", "bytes_out", "requests_total",
                      "responses_5xx", "denied"):
            found[("frontend", frontend["name"], field)] = frontend[field]
    for backend in body["backends"]:
        found[("backend", backend["name"], "total_sessions")] = backend["total_sessions"]
        for server in backend["servers"]:
            found[(backend["name"], server["name"], "total_sessions")] = server["total_sessions"]
    return found


def assert_not_lower(before, after):
    for key, value in before.items():
        if value is not None:
            assert after.get(key) is not None and after[key] >= value, (key, before, after)


def send(port, count):
    for _ in range(count):
        status, _headers, body = http_get(port)
        assert (status, body) == (200, b"backend-ok")


def wait_for_checks(api, instance):
    """Until haproxy's checks say the live server is UP and the dead one DOWN
    (a new haproxy sends nothing to a server before its first check)."""
    def settled():
        body = stats(api, instance)
        pool = named(body["backends"], "pool")["servers"] if body["backends"] else []
        return [(s["name"], s["status"]) for s in pool] == [("live.1", "UP"), ("dead-1", "DOWN")]

    assert eventually(settled, 10), stats(api, instance)


@pytest.fixture
def tenant(api, instance_id, backend):
    ports = dict(port=free_port(), tcp_port=free_port(), backend_port=backend.port,
                 dead_port=free_port())
    reply = api.put("/instances/%s/haproxy" % instance_id, tenant_config(**ports))
    assert reply.status == 201, reply

    wait_for_checks(api, instance_id)
    return type("Tenant", (), dict(id=instance_id, ports=ports, **ports))


def test_counts_match_the_requests_sent_and_survive_reload_kill_and_restart(api, tenant,
                                                                            backend):
    hits = backend.server.hits
    send(tenant.port, 20)
    body = stats(api, tenant.id)
    assert body["id"] == tenant.id and body["haproxy"] == "running"
    web = named(body["frontends"], "web")
    assert (web["status"], web["requests_total"], web["total_sessions"]) == ("OPEN", 20, 20)
    assert web["bytes_in"] > 0 and web["bytes_out"] >= 20 * len(b"backend-ok")
    assert web["responses_5xx"] == 0 and web["denied"] == 0
    pool = named(body["backends"], "pool")
    assert pool["status"] == "UP" and pool["total_sessions"] == 20
    live, dead = pool["servers"]
    assert (live["address"], live["total_sessions"]) == ("127.0.0.1:%d" % tenant.backend_port,
                                                         20)
    assert live["check"].startswith("L4OK") and dead["check"].startswith("L4CON")
    assert dead["total_sessions"] == 0 and isinstance(live["last_change_s"], int)
    assert backend.server.hits - hits == 20
    raw = named(body["frontends"], "raw")  # TCP mode: no HTTP counts
    assert (raw["requests_total"], raw["responses_5xx"], raw["total_sessions"]) == (
        None, None, 0)

    # A reload (a changed config): the new worker starts at zero, the totals do not.
    before = totals(body)
    reply = api.put("/instances/%s/haproxy" % tenant.id,
                    tenant_config(comment="changed", **tenant.ports))
    assert reply.status == 201 and "reloaded" in reply.body, reply
    after_reload = totals(stats(api, tenant.id))
    assert_not_lower(before, after_reload)
    assert after_reload[("frontend", "web", "requests_total")] == 20
    send(tenant.port, 5)
    assert totals(stats(api, tenant.id))[("frontend", "web", "requests_total")] == 25

    # SIGKILL of the master (its worker follows), then octctl start.
    before = totals(stats(api, tenant.id))
    master = api.service_pid(tenant.id, "haproxy")
    os.kill(master, signal.SIGKILL)
    assert eventually(lambda: stats(api, tenant.id)["haproxy"] == "stopped", 10)
    assert_not_lower(before, totals(stats(api, tenant.id)))
    started = octctl(api, "start", tenant.id, "haproxy")
    assert started.returncode == 0, started.stderr
    wait_for_checks(api, tenant.id)
    send(tenant.port, 3)
    body = stats(api, tenant.id)
    assert body["haproxy"] == "running"
    assert_not_lower(before, totals(body))
    assert totals(body)[("frontend", "web", "requests_total")] == 28
    assert totals(body)[("pool", "live.1", "total_sessions")] == 28

    # octctl stats prints them too.
    printed = octctl(api, "stats", tenant.id)
    assert printed.returncode == 0, printed.stderr
    assert "live.1" in printed.stdout and "UP" in printed.stdout
    summary = octctl(api, "stats").stdout
    assert any(line.startswith(tenant.id) and line.endswith(" 2/3") for line in summary.splitlines())

    # Stopped: the counters are kept.
    stopped = octctl(api, "stop", tenant.id, "haproxy")
    assert stopped.returncode == 0, stopped.stderr
    body = stats(api, tenant.id)
    assert body["haproxy"] == "stopped"
    assert totals(body)[("frontend", "web", "requests_total")] == 28
    assert named(body["frontends"], "web")["current_sessions"] is None


def test_stats_of_an_unknown_instance_is_404(api, instance_id):
    reply = api.get("/instances/%s/stats" % instance_id)
    assert (reply.status, reply.body) == (404, "Not Found\n")


def test_metrics_parse_and_a_silent_tenant_costs_one_bounded_wait(api, tenant, backend):
    send(tenant.port, 4)
    # curl asks for HTTP/2 (its default over TLS); the edge answers in HTTP/1.1
    # as on every path (test_edge.py), and the scrape works.
    reply = api.get("/metrics", "--http2")
    assert reply.status == 200 and reply.http_version == "1.1", reply
    assert reply.content_type == "text/plain; version=0.0.4; charset=utf-8"
    families = prometheus_text.parse(reply.body)
    for name, family in families.items():
        assert family.help and (family.type == "counter") == name.endswith("_total"), name
    mine = {name: [(labels, value) for labels, value in family.samples
                   if labels.get("instance") == tenant.id] for name, family in families.items()}
    assert mine["appliance_haproxy_up"] == [({"instance": tenant.id}, 1)]
    assert ({"instance": tenant.id, "frontend": "web"}, 4) in \
        mine["appliance_frontend_http_requests_total"]
    for labels, _value in mine["appliance_server_status"]:
        assert set(labels) == {"instance", "backend", "server", "state"}
    states = {(l["server"], l["state"]): v for l, v in mine["appliance_server_status"]
              if l["backend"] == "pool"}
    assert states[("live.1", "UP")] == 1 and states[("dead-1", "DOWN")] == 1
    assert sum(states.values()) == 2
    for labels, _value in mine["appliance_backend_sessions_total"]:
        assert set(labels) == {"instance", "backend"}

    with api.client() as appliance:  # the controller's library reads the same
        assert appliance.stats(tenant.id)["frontends"][0]["requests_total"] == 4
        assert prometheus_text.parse(appliance.metrics())["appliance_haproxy_up"].samples

    # A second tenant whose master is stopped (SIGSTOP): accepted, never answered.
    instance_id = str(uuid.uuid4())
    other = dict(tenant.ports, port=free_port(), tcp_port=free_port())
    assert api.put("/instances/%s/haproxy" % instance_id, tenant_config(**other)).status == 201
    master = api.service_pid(instance_id, "haproxy")
    os.kill(master, signal.SIGSTOP)
    try:
        started = time.monotonic()
        reply = api.get("/metrics")
        elapsed = time.monotonic() - started
        assert reply.status == 200, reply
        up = {labels["instance"]: value for labels, value in
              prometheus_text.parse(reply.body)["appliance_haproxy_up"].samples}
        assert up[instance_id] == 0 and up[tenant.id] == 1
        # One bounded wait (cli_timeout), plus a CGI's start, well under 2 s.
        assert CLI_TIMEOUT <= elapsed < CLI_TIMEOUT + 1.6, elapsed
        assert stats(api, instance_id)["haproxy"] == "not answering"
    finally:
        os.kill(master, signal.SIGCONT)
        assert api.delete("/instances/" + instance_id).status == 200
