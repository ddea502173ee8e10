"""Supervision of the installed appliance under real systemd: a SIGKILLed
stunnel and keepalived come back and serve, a crash-looping tenant backs
off while another is restarted at once, and the sync timer runs.

`make test` runs each check once; `make proof` (APPLIANCE_PROOF=heavy) runs
the kills KILL_ROUNDS times over, the same machine and daemons each round."""
import json
import os

from support.nspawn import VIP_NETWORK, tenant_certificate
from support.polling import eventually

from .test_installed_appliance import (STATE, TENANT_A, TENANT_B, answer_of, master_pid,
                                       put_tenant, serves)

HEAVY = os.environ.get("APPLIANCE_PROOF") == "heavy"
KILL_ROUNDS = 5 if HEAVY else 1
CERTIFICATE_NAME = "tenant.example"
TLS_PORT_OFFSET = 1000    # a tenant's stunnel listens on its haproxy port + this
INI = "/etc/appliance-api/appliance-api.ini"
THIS_NODE, SILENT_PEER, HA_IP = VIP_NETWORK + ".10", VIP_NETWORK + ".11", VIP_NETWORK + ".100"


def put_tls(machine, instance, port):
    """TLS through the tenant's stunnel (port + TLS_PORT_OFFSET) to its haproxy."""
    address = "%s.%d" % (VIP_NETWORK, port % 200 + 20)
    for path, body in (("certificates/%s.pem" % CERTIFICATE_NAME,
                        tenant_certificate(CERTIFICATE_NAME)),
                       ("stunnel", "[tls]\naccept = %s:%d\nconnect = %s:%d\n"
                        "cert = {INSTANCE_DIR}/certificates/%s.pem\n"
                        % (address, port + TLS_PORT_OFFSET, address, port, CERTIFICATE_NAME))):
        status, answer = machine.api("PUT", "/instances/%s/%s" % (instance, path), body)
        assert status in (200, 201), (path, status, answer)


def tls_answer_of(machine, port):
    return machine.http_get("%s.%d" % (VIP_NETWORK, port % 200 + 20), port + TLS_PORT_OFFSET,
                            tls=True)


def serves_tls(machine, instance, port, timeout=5):
    return eventually(lambda: tls_answer_of(machine, port) == instance, timeout=timeout,
                      interval=0.1)


def pid_in(machine, path):
    completed = machine.run(["cat", path], check=False)
    words = completed.stdout.split()
    return int(words[0]) if words and words[0].isdigit() else None


def alive(machine, pid):
    return pid is not None and machine.run(["kill", "-0", str(pid)], check=False).returncode == 0


def kill_and_wait_for_another(machine, pid_file, timeout=10):
    """SIGKILL the daemon pid_file names; its successor's pid once one runs."""
    killed = pid_in(machine, pid_file)
    assert alive(machine, killed), (pid_file, killed)
    machine.run(["kill", "-9", str(killed)])
    successor = lambda: (pid_in(machine, pid_file) not in (None, killed)
                         and alive(machine, pid_in(machine, pid_file))
                         and pid_in(machine, pid_file))
    new = eventually(successor, timeout=timeout, interval=0.05)
    assert new, machine.journal("-u", "appliance-api-supervisor", "-n", "20")
    return new


def status(machine):
    code, body = machine.api("GET", "/status")
    assert code == 200, body
    return json.loads(body)


def test_a_killed_stunnel_comes_back_and_serves_tls_to_its_haproxy(machine):
    put_tenant(machine, TENANT_A, 8001)
    put_tls(machine, TENANT_A, 8001)
    assert serves_tls(machine, TENANT_A, 8001)
    haproxy = master_pid(machine, TENANT_A)
    for _round in range(KILL_ROUNDS):
        kill_and_wait_for_another(machine, "%s/instances/%s/stunnel.pid" % (STATE, TENANT_A))
        assert serves_tls(machine, TENANT_A, 8001), machine.journal("-n", "30")
    assert master_pid(machine, TENANT_A) == haproxy  # behind it, untouched


def test_a_killed_keepalived_comes_back_and_this_node_is_master_again(machine):
    """A pair whose peer never answers: this node becomes MASTER alone."""
    form = ("topology=ACTIVE-STANDBY&routing-mode=LAYER2&role=PRIMARY&ha_ip=%s&primary_ip=%s"
            "&all_ips[0]=%s&all_ips[1]=%s&secret=pairsecr" % (HA_IP, THIS_NODE, THIS_NODE,
                                                               SILENT_PEER))
    code, body = machine.api("POST", "/topology", form,
                             content_type="application/x-www-form-urlencoded")
    assert (code, body) == (200, "OK\n")
    master = lambda: (status(machine)["fencing_daemon_status"] == "OK"
                      and status(machine)["active_node"] == 1)
    assert eventually(master, timeout=20, interval=0.2), status(machine)
    for _round in range(KILL_ROUNDS):
        kill_and_wait_for_another(machine, STATE + "/vrrp/keepalived.pid")
        assert eventually(master, timeout=20, interval=0.2), (
            status(machine), machine.journal("-u", "appliance-api-supervisor", "-n", "20"))
    assert status(machine)["topology_status"] == "OK"


def test_a_crash_looping_tenant_backs_off_while_another_killed_meanwhile_is_back_at_once(
        machine):
    """The supervisor's back-off made short for the test: one start in 30 s
    is free, then each waits 1 s, 2 s, 4 s."""
    machine.run(["sed", "-i", "-e", "s/^burst = .*/burst = 1/", "-e",
                 "s/^max_delay = .*/max_delay = 8/", INI])
    machine.run(["systemctl", "restart", "appliance-api-supervisor.service"])
    put_tenant(machine, TENANT_A, 8001)
    put_tenant(machine, TENANT_B, 8002)
    looping = "%s/instances/%s/haproxy.pid" % (STATE, TENANT_A)
    for _start in range(3):  # a free start, then after 1 s and 2 s: the next waits 4 s
        kill_and_wait_for_another(machine, looping)
    machine.run(["kill", "-9", str(master_pid(machine, TENANT_A))])
    backing_off = lambda: "backing off" in machine.api("GET", "/service_status")[1]
    assert eventually(backing_off, timeout=2, interval=0.05), \
        machine.api("GET", "/service_status")[1]
    killed = master_pid(machine, TENANT_B)
    machine.run(["kill", "-9", str(killed)])
    assert eventually(lambda: master_pid(machine, TENANT_B) not in (None, killed)
                      and answer_of(machine, 8002) == TENANT_B, timeout=1, interval=0.05), \
        machine.journal("-u", "appliance-api-supervisor", "-n", "20")
    assert backing_off()  # the looping one still waits
    assert serves(machine, TENANT_A, 8001, timeout=8)  # its wait over, it runs again
    log = machine.journal("-u", "appliance-api-supervisor", "-o", "cat")
    assert "%s/haproxy keeps exiting: backing off" % TENANT_A in log, log[-2000:]


def test_the_sync_timer_runs_its_service_within_15_seconds_of_boot(machine):
    """The timer's first run (OnBootSec=10s) started, and ended well."""
    ran = lambda: machine.run(["systemctl", "show", "-P", "ExecMainExitTimestampMonotonic",
                               "appliance-api-sync.service"]).stdout.strip() not in ("", "0")
    assert eventually(ran, timeout=15, interval=0.5), machine.journal("-u", "appliance-api-sync*")
    shown = machine.run(["systemctl", "show", "-p", "Result", "-p", "ExecMainStatus",
                         "appliance-api-sync.service"]).stdout.split()
    assert sorted(shown) == ["ExecMainStatus=0", "Result=success"], shown
    journal = machine.journal("-u", "appliance-api-sync.service", "-o", "cat")
    assert "Finished appliance-api-sync.service" in journal, journal


def tenant_daemon_pids(machine):
    """Every tenant daemon's pid (haproxy and stunnel, by their instance folders)."""
    completed = machine.run(["pgrep", "-f", "%s/instances/" % STATE], check=False)
    return sorted(int(pid) for pid in completed.stdout.split())


def test_stopping_lighttpd_leaves_every_tenants_daemons_and_tls_traffic_untouched(machine):
    put_tenant(machine, TENANT_A, 8001)
    put_tenant(machine, TENANT_B, 8002)
    put_tls(machine, TENANT_B, 8002)
    assert serves_tls(machine, TENANT_B, 8002)
    before = tenant_daemon_pids(machine)
    assert len(before) >= 5, before  # two masters, two workers, a stunnel
    machine.run(["systemctl", "stop", "lighttpd.service"])
    try:
        assert machine.run(["systemctl", "is-active", "lighttpd.service"],
                           check=False).stdout.strip() == "inactive"
        assert tenant_daemon_pids(machine) == before
        assert answer_of(machine, 8001) == TENANT_A and answer_of(machine, 8002) == TENANT_B
        assert tls_answer_of(machine, 8002) == TENANT_B
    finally:
        machine.run(["systemctl", "start", "lighttpd.service"])
    assert machine.api("GET", "/status")[0] == 200
    assert tenant_daemon_pids(machine) == before
