"""make bench-failover: an active/standby pair in network namespaces (the
test support's Pair: two nodes and a client on a bridge in a third), each
node with its own lighttpd, state folder, haproxy and keepalived; the
figures of its failovers, printed.

- For each way the primary fails (its keepalived stopped cleanly, its haproxy
  killed, its link cut), RUNS times: the time until the secondary holds ha_ip
  and the tenant's service IP, and until the secondary's /status says
  active_node 1. Median and max.
- Traffic: a client loop in the client namespace (a new connection per
  request, 3 s connect timeout, at least 2,000 requests) through the
  tenant's service IP, served by both nodes' haproxy, across a clean
  failover and back: requests sent, failed.

Addresses are the documentation range on the namespaces' own bridge: no
packet leaves it. Every loop is bounded.
"""
import json
import os
import signal
import statistics
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from support.polling import eventually  # noqa: E402
from support.netns import Pair, client_loop, haproxy_config, topology_form  # noqa: E402

HA_IP, SERVICE_IP = "192.0.2.100", "192.0.2.110"
PRIMARY, SECONDARY = Pair.NODES
RUNS = int(os.environ.get("FAILOVER_RUNS", "5"))
REQUESTS = int(os.environ.get("FAILOVER_REQUESTS", "2000"))
# [ha] down_timer_adverts: 3 is the VRRP RFCs' (and the API's default).
DOWN_TIMER_ADVERTS = os.environ.get("FAILOVER_DOWN_TIMER_ADVERTS", "3")


def holders(pair, address):
    return [address in node.addresses() for node in pair.nodes]


def sample_call(role):
    return topology_form(role, secret="benchsecret")


def active(site):
    code, body = site("GET", "/status")
    return code == 200 and json.loads(body)["active_node"] == 1


def transition_done(site):
    code, body = site("GET", "/topology")
    return code == 200 and json.loads(body)["topology_status"] == "OK"


def primary_back(pair, timeout=20):
    return eventually(lambda: holders(pair, SERVICE_IP) == [True, False]
                    and holders(pair, HA_IP) == [True, False], timeout, 0.05)


def measure(pair, fail, restore):
    """(seconds until the secondary held ha_ip and the service IP, seconds
    until its /status said active_node 1)."""
    primary, secondary = pair.sites
    assert primary_back(pair), "the primary does not hold the addresses"
    time.sleep(1.5)  # a settled pair: adverts flowing, health checks passing
    started = time.monotonic()
    fail()
    assert eventually(lambda: holders(pair, HA_IP)[1] and holders(pair, SERVICE_IP)[1], 15,
                      0.005), \
        "the secondary never took over"
    moved = time.monotonic() - started
    assert eventually(lambda: active(secondary), 10, 0.01)
    said = time.monotonic() - started
    restore()
    assert primary_back(pair), "the primary did not take the addresses back"
    return moved, said


def main():
    tag = "b%d" % os.getpid()
    pair = Pair(tag)
    try:
        sites = pair.start_sites({"ha": {"down_timer_adverts": DOWN_TIMER_ADVERTS}})
        pair.form(secret="benchsecret")
        instance = str(uuid.uuid4())
        for number, site in enumerate(sites, 1):
            code, body = site("PUT", "/instances/%s/haproxy" % instance,
                              haproxy_config(SERVICE_IP + ":80", answer="node%d" % number))
            assert code == 201, body
        primary, secondary = sites

        def keepalived_pid():
            with open(os.path.join(primary.state_dir, "vrrp", "keepalived.pid")) as file:
                return int(file.read())

        def haproxy_pid():
            with open(os.path.join(primary.instances_dir, instance, "haproxy.pid")) as file:
                return int(file.read())

        def restart_keepalived():
            assert primary("POST", "/topology", sample_call("PRIMARY")) == (200, "OK\n")
            assert eventually(lambda: transition_done(primary), 30, 0.1)

        def restart_haproxy():
            code, body = primary("PUT", "/instances/%s/haproxy" % instance,
                                 haproxy_config(SERVICE_IP + ":80", answer="node1"))
            assert code == 201, body

        ways = [
            ("primary's keepalived stopped (SIGTERM)",
             lambda: os.kill(keepalived_pid(), signal.SIGTERM), restart_keepalived),
            ("primary's haproxy killed (SIGKILL)",
             lambda: os.killpg(os.getpgid(haproxy_pid()), signal.SIGKILL), restart_haproxy),
            ("primary's link cut",
             lambda: pair.cut(pair.nodes[0]), lambda: pair.cut(pair.nodes[0], up=True)),
        ]
        rows = []
        for name, fail, restore in ways:
            times = [measure(pair, fail, restore) for _ in range(RUNS)]
            rows.append((name, [t[0] for t in times], [t[1] for t in times]))
            print("  measured: %s" % name, file=sys.stderr)

        # Traffic across a clean failover and back.
        assert primary_back(pair)
        time.sleep(1.5)
        loop = client_loop(pair, SERVICE_IP, REQUESTS)
        time.sleep(3)
        os.kill(keepalived_pid(), signal.SIGTERM)
        assert eventually(lambda: holders(pair, SERVICE_IP)[1], 15)
        time.sleep(3)
        restart_keepalived()
        assert primary_back(pair)
        requests, failed = (int(x) for x in loop.communicate(timeout=180)[0].split()[:2])

        print()
        print("Failover of an active/standby pair (%d runs each; seconds; "
              "down_timer_adverts %s)" % (RUNS, DOWN_TIMER_ADVERTS))
        print()
        print("| the primary fails by | secondary holds ha_ip + service IP: median (max) "
              "| secondary's /status says active: median (max) |")
        print("| --- | ---: | ---: |")
        for name, moved, said in rows:
            print("| %s | %.3f (%.3f) | %.3f (%.3f) |" % (
                name, statistics.median(moved), max(moved), statistics.median(said), max(said)))
        print()
        print("Client loop through the service IP across a clean failover and back "
              "(new connection each, 3 s connect timeout): %d requests, %d failed"
              % (requests, failed))
    finally:
        pair.close()


if __name__ == "__main__":
    main()
