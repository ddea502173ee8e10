"""The installed appliance under real systemd (see __init__.py): its units,
its tenants' control groups, and what a crash, an API restart and a reboot
do to a tenant."""
from support.nspawn import VIP_NETWORK
from support.polling import eventually

STATE = "/var/lib/appliance-api"
OUR_UNITS = ("lighttpd.service", "appliance-api-supervisor.service", "appliance-api-sync.timer")
LEFT_OVER = "Found left-over process"
TENANT_A = "aaaaaaaa-0000-4000-8000-000000000001"
TENANT_B = "bbbbbbbb-0000-4000-8000-000000000002"


def haproxy_config(port, answer):
    """A tenant that answers `answer` on its service IP itself (no backend
    to keep alive beside it)."""
    return ("global\n    maxconn 100\n"
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n"
            "    timeout server 5s\n"
            "frontend fe\n    bind %s.%d:%d\n"
            "    http-request return status 200 content-type text/plain string %s\n"
            % (VIP_NETWORK, port % 200 + 20, port, answer))


def put_tenant(machine, instance, port):
    status, body = machine.api("PUT", "/instances/%s/haproxy" % instance,
                               haproxy_config(port, instance))
    assert status in (200, 201), (status, body)


def answer_of(machine, port):
    """What the tenant on port answers, None when nothing does."""
    return machine.http_get("%s.%d" % (VIP_NETWORK, port % 200 + 20), port)


def serves(machine, instance, port, timeout=5):
    return eventually(lambda: answer_of(machine, port) == instance, timeout=timeout,
                      interval=0.1)


def master_pid(machine, instance):
    completed = machine.run(["cat", "%s/instances/%s/haproxy.pid" % (STATE, instance)],
                            check=False)
    return int(completed.stdout) if completed.stdout.strip().isdigit() else None


def haproxy_pids(machine, instance):
    """The instance's haproxy processes: master and worker."""
    completed = machine.run(["pgrep", "-f", "^/usr/sbin/haproxy .*/instances/%s/" % instance],
                            check=False)
    return sorted(int(pid) for pid in completed.stdout.split())


def octctl(machine, *words):
    return machine.run(["/usr/sbin/octctl", "--config", "/etc/appliance-api/appliance-api.ini"]
                       + list(words))


def test_the_installed_api_answers_over_mutual_tls_and_every_unit_of_ours_is_active(machine):
    status, body = machine.api("GET", "/status")
    assert status == 200, body
    assert '"instance_count": 0' in body
    refused = machine.run(["curl", "-sS", "--cacert", "/etc/appliance-api/pki/ca.pem",
                           "https://192.0.2.10/status"], check=False)
    assert refused.returncode != 0 and refused.stdout == ""  # no client certificate: no TLS
    assert machine.system_state() == "running", machine.failed_units()
    states = machine.run(["systemctl", "is-active"] + list(OUR_UNITS), check=False).stdout
    assert dict(zip(OUR_UNITS, states.split())) == dict.fromkeys(OUR_UNITS, "active"), \
        machine.run(["systemctl", "status", "--no-pager", "-n", "5"] + list(OUR_UNITS),
                    check=False).stdout


def test_a_haproxy_config_put_through_the_api_makes_the_tenant_serve(machine):
    assert answer_of(machine, 8001) is None
    put_tenant(machine, TENANT_A, 8001)
    assert serves(machine, TENANT_A, 8001)


def test_the_tenants_daemons_live_outside_lighttpd_control_group(machine):
    """In a scope of their own under appliance-tenants.slice; lighttpd's
    group holds lighttpd alone (no haproxy, no tee for its log)."""
    put_tenant(machine, TENANT_A, 8001)
    pids = haproxy_pids(machine, TENANT_A)
    assert len(pids) >= 2, pids  # master and worker
    groups = {pid: machine.cgroup_of(pid) for pid in pids}
    assert all("/appliance-tenants.slice/" in group and "lighttpd" not in group
               for group in groups.values()), groups
    # A CGI that answered may take a moment to be reaped: lighttpd alone, soon.
    only_lighttpd = lambda: machine.unit_pids("lighttpd.service") == [
        machine.main_pid("lighttpd.service")]
    assert eventually(only_lighttpd, timeout=5), machine.run(
        ["systemd-cgls", "--no-pager", "-u", "lighttpd.service"]).stdout

def test_restarting_or_stopping_lighttpd_leaves_the_tenant_serving_in_the_same_processes(machine):
    put_tenant(machine, TENANT_A, 8001)
    before = haproxy_pids(machine, TENANT_A)
    machine.run(["systemctl", "restart", "lighttpd.service"])
    assert haproxy_pids(machine, TENANT_A) == before
    assert serves(machine, TENANT_A, 8001, timeout=1)
    machine.run(["systemctl", "stop", "lighttpd.service"])
    assert haproxy_pids(machine, TENANT_A) == before
    assert serves(machine, TENANT_A, 8001, timeout=1)
    machine.run(["systemctl", "start", "lighttpd.service"])
    assert machine.api("GET", "/status")[0] == 200


def test_a_killed_haproxy_master_serves_again_without_any_api_call(machine):
    put_tenant(machine, TENANT_A, 8001)
    killed = master_pid(machine, TENANT_A)
    assert killed in haproxy_pids(machine, TENANT_A)
    machine.run(["kill", "-9", str(killed)])
    assert eventually(lambda: answer_of(machine, 8001) is None, timeout=2, interval=0.02) \
        or master_pid(machine, TENANT_A) != killed  # down, or already back
    assert serves(machine, TENANT_A, 8001, timeout=5), machine.journal("-n", "30")
    assert master_pid(machine, TENANT_A) not in (killed, None)


def test_a_reboot_brings_every_tenant_back_serving_without_any_api_call(machine):
    """...and the poweroff before it is not taken for crashes: once the
    supervisor is being stopped, no daemon is started again."""
    put_tenant(machine, TENANT_A, 8001)
    put_tenant(machine, TENANT_B, 8002)
    machine.reboot()
    assert serves(machine, TENANT_A, 8001, timeout=10), machine.journal("-b", "-n", "40")
    assert serves(machine, TENANT_B, 8002, timeout=1)
    shutdown = machine.journal("-b", "-1", "-o", "cat").splitlines()
    stopping = [n for n, line in enumerate(shutdown)
                if line.startswith("Stopping appliance-api-supervisor.service")]
    assert stopping, shutdown[-40:]
    started_late = [line for line in shutdown[stopping[0]:]
                    if line.startswith("Started appliance-") and ".scope" in line]
    assert started_late == []


def test_no_boot_of_the_appliance_leaves_a_left_over_process_in_the_journal(machine):
    """After what starts daemons from an API unit's control group: a PUT
    (lighttpd's CGI), a run of the sync service, a restart of lighttpd and a
    reboot, with the tenant serving throughout."""
    put_tenant(machine, TENANT_A, 8001)
    machine.run(["systemctl", "start", "appliance-api-sync.service"])
    machine.run(["systemctl", "restart", "lighttpd.service"])
    assert serves(machine, TENANT_A, 8001, timeout=5)
    machine.reboot()
    assert serves(machine, TENANT_A, 8001, timeout=10)
    machine.run(["systemctl", "restart", "lighttpd.service"])
    boots = machine.run(["journalctl", "--list-boots", "--no-pager", "-q"]).stdout
    assert len(boots.splitlines()) == 2, boots  # both boots' journals are read below
    left_over = [line for line in machine.journal().splitlines() if LEFT_OVER in line]
    assert left_over == []


def test_an_instance_stopped_by_the_operator_stays_stopped_across_a_reboot(machine):
    """The stop is desired state, not a crash: the supervisor and the boot
    leave that instance down while the other comes back, until `octctl start`."""
    put_tenant(machine, TENANT_A, 8001)
    put_tenant(machine, TENANT_B, 8002)
    octctl(machine, "stop", TENANT_A)
    assert answer_of(machine, 8001) is None
    machine.reboot()
    assert serves(machine, TENANT_B, 8002, timeout=10)  # the boot did start tenants
    assert not serves(machine, TENANT_A, 8001, timeout=2)
    assert haproxy_pids(machine, TENANT_A) == []
    octctl(machine, "start", TENANT_A)
    assert serves(machine, TENANT_A, 8001)
    machine.reboot()
    assert serves(machine, TENANT_A, 8001, timeout=10)  # started again: running is remembered
