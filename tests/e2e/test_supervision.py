"""The appliance heals itself (octctl supervise), through a real lighttpd,
haproxy and stunnel on a site of its own: a daemon killed with SIGKILL is
back without any call; one an operator stopped stays stopped; one that
keeps dying backs off without holding up the others; a supervisor started
on stored configs (a boot) starts every tenant."""
import json
import os
import signal
import time
import uuid

import pytest

from .conftest import running_site
from .helpers import (Supervisor, eventually, free_port, haproxy_template, http_get, octctl,
                      pid_gone, stunnel_template)

# Back-off quickly enough for a test: 2 starts in 20 s are free, then 1 s, 2 s, 4 s...
SUPERVISION = {"supervisor": {"burst": "2", "window": "20", "max_delay": "4",
                              "scan_interval": "0.5"}}


@pytest.fixture(scope="module")
def site(tmp_path_factory, pki):
    with running_site(str(tmp_path_factory.mktemp("supervised")), pki, SUPERVISION) as api:
        yield api


@pytest.fixture
def supervisor(site):
    running = Supervisor(site)
    running.wait_ready()
    yield running
    running.stop()


def make_tenant(site, backend, listener_pki, tls=False):
    instance = str(uuid.uuid4())
    port = free_port()
    with site.client() as appliance:
        appliance.put_config(instance, "haproxy", haproxy_template(port, backend.port))
        tls_port = None
        if tls:
            tls_port = free_port()
            appliance.put_certificate(instance, "localhost.pem", listener_pki.upload)
            appliance.put_config(instance, "stunnel", stunnel_template(tls_port, port))
    return type("Tenant", (), dict(id=instance, port=port, tls_port=tls_port))


@pytest.fixture
def tenant(site, backend, listener_pki):
    made = make_tenant(site, backend, listener_pki, tls=True)
    yield made
    assert site.delete("/instances/" + made.id).status in (200, 404)


def serves(port, context=None):
    try:
        return http_get(port, context=context, timeout=2)[2] == b"backend-ok"
    except OSError:
        return False


def kill(pid):
    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: pid_gone(pid), 5)


def restarted(site, tenant, service, old_pid, timeout=10):
    """The new pid once /service_status shows the service running again under another."""
    return eventually(lambda: (site.service_pid(tenant.id, service) or old_pid) != old_pid
                      and site.service_pid(tenant.id, service), timeout)


def test_a_killed_haproxy_and_stunnel_are_back_without_any_call(
        site, supervisor, tenant, listener_pki):
    time.sleep(1.2)  # two scans (0.5 s apart): the supervisor watches the new tenant's pids
    for service in ("haproxy", "stunnel"):
        pid = site.service_pid(tenant.id, service)
        kill(pid)
        assert restarted(site, tenant, service, pid), supervisor.lines()
    assert eventually(lambda: serves(tenant.tls_port, listener_pki.context), 5)
    assert any("exited (pid %d)" % pid in line for line in supervisor.lines())


def test_a_daemon_stopped_by_the_operator_stays_stopped_until_started(
        site, supervisor, tenant):
    assert octctl(site, "stop", tenant.id, "haproxy").returncode == 0
    time.sleep(2)  # four scans
    assert site.service_pid(tenant.id, "haproxy") is None
    assert "stopped (by operator)" in site.service_status()
    report = json.loads(octctl(site, "show", tenant.id, "--json").stdout)
    assert report["services"]["haproxy"]["stopped_by_operator"] is True
    assert octctl(site, "start", tenant.id, "haproxy").returncode == 0
    pid = site.service_pid(tenant.id, "haproxy")
    kill(pid)  # started on purpose: supervised again
    assert restarted(site, tenant, "haproxy", pid), supervisor.lines()


def test_a_new_config_ends_an_operators_stop(site, supervisor, tenant, backend):
    assert octctl(site, "stop", tenant.id, "haproxy").returncode == 0
    reply = site.put("/instances/%s/haproxy" % tenant.id,
                     haproxy_template(tenant.port, backend.port, "    option httplog\n"))
    assert reply.status == 201, reply
    pid = site.service_pid(tenant.id, "haproxy")
    assert pid is not None
    kill(pid)
    assert restarted(site, tenant, "haproxy", pid), supervisor.lines()


def test_a_daemon_that_keeps_dying_backs_off_and_the_others_do_not_wait(
        site, supervisor, backend, listener_pki):
    looping = make_tenant(site, backend, listener_pki)
    other = make_tenant(site, backend, listener_pki)
    try:
        for _ in range(3):  # burst 2: the third start waits 1 s, the fourth 2 s
            pid = site.service_pid(looping.id, "haproxy")
            assert pid, supervisor.lines()
            kill(pid)
            assert restarted(site, looping, "haproxy", pid, timeout=5), supervisor.lines()
        kill(site.service_pid(looping.id, "haproxy"))
        assert eventually(lambda: "backing off" in site.service_status(), 1.5), \
            (site.service_status(), supervisor.lines())
        listed = site.get("/listeners/" + looping.id)
        assert json.loads(listed.body)["supervision"]["haproxy"]["backing_off"]
        pid = site.service_pid(other.id, "haproxy")
        kill(pid)  # meanwhile: the other tenant is back at once
        assert restarted(site, other, "haproxy", pid, timeout=3), supervisor.lines()
        # The back-off ends (max_delay 2 s) and the looping one runs again.
        assert eventually(lambda: site.service_pid(looping.id, "haproxy"), 10), \
            supervisor.lines()
        assert any("backing off" in line for line in supervisor.lines())
    finally:
        for made in (looping, other):
            site.delete("/instances/" + made.id)


def test_a_supervisor_started_on_stored_configs_starts_every_tenant(
        site, backend, listener_pki):
    """What a boot is to the supervisor: configs stored, no daemon running."""
    tenants = [make_tenant(site, backend, listener_pki, tls=True) for _ in range(3)]
    try:
        for made in tenants:
            for service in ("stunnel", "haproxy"):
                kill(site.service_pid(made.id, service))
        assert "OK" not in site.service_status()
        supervisor = Supervisor(site)
        try:
            supervisor.wait_ready()
            for made in tenants:
                assert eventually(lambda: serves(made.tls_port, listener_pki.context), 5)
            assert "DOWN" not in site.service_status()
        finally:
            supervisor.stop()
        # A supervisor that ends leaves every tenant running.
        time.sleep(0.5)
        assert all(serves(made.port) for made in tenants)
    finally:
        for made in tenants:
            site.delete("/instances/" + made.id)
