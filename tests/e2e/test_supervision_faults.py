"""The supervisor against a state folder edited by hand, a crash of its
own and a config whose daemon will not stay up: it never kills or starts
the wrong process, and never starts a second daemon on one config (real
lighttpd, haproxy and stunnel on a site of its own, test_supervision's
settings)."""
import os
import shutil
import signal
import subprocess
import time
import uuid

import psutil
import pytest

from appliance_api.layout import Instance

from . import test_supervision
from .helpers import (Supervisor, daemons_under, eventually, free_port, haproxy_template,
                      listening_socket)
from .test_supervision import kill, make_tenant, serves

# test_supervision's site (a module's own: this one's) and supervisor.
site, supervisor = test_supervision.site, test_supervision.supervisor


@pytest.fixture
def tenant(site, backend, listener_pki):
    made = make_tenant(site, backend, listener_pki)
    yield made
    assert site.delete("/instances/" + made.id).status in (200, 404)


def folder_of(site, instance):
    return os.path.join(site.instances_dir, instance)


def rendered(site, instance, service="haproxy"):
    return Instance(site.state_dir, instance).rendered(service)


def haproxy_masters(site, instance):
    """The haproxy master processes running the instance's rendered config:
    the topmost of each tree of haproxy processes naming it."""
    config = rendered(site, instance)
    found = {}
    for process in psutil.process_iter(["name", "cmdline", "status", "ppid"]):
        info = process.info
        if info["name"] == "haproxy" and info["status"] != psutil.STATUS_ZOMBIE \
                and config in (info["cmdline"] or []):
            found[process.pid] = info["ppid"]
    return sorted(pid for pid, parent in found.items() if parent not in found)


def pid_file_names(site, instance, service="haproxy"):
    try:
        with open(os.path.join(folder_of(site, instance), service + ".pid")) as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_pid_file(site, instance, pid, service="haproxy"):
    with open(os.path.join(folder_of(site, instance), service + ".pid"), "w") as file:
        file.write("%d\n" % pid)


def test_a_deleted_pid_file_of_a_running_haproxy_is_written_back_and_no_second_one_starts(
        site, supervisor, tenant):
    [master] = haproxy_masters(site, tenant.id)
    os.unlink(os.path.join(folder_of(site, tenant.id), "haproxy.pid"))
    assert eventually(lambda: pid_file_names(site, tenant.id) == master, 5), supervisor.lines()
    time.sleep(1)  # two more scans: nothing else happens
    assert haproxy_masters(site, tenant.id) == [master]
    assert any("adopted (pid %d)" % master in line for line in supervisor.lines())
    assert serves(tenant.port)


def test_a_pid_file_naming_another_live_process_neither_kills_it_nor_leaves_the_tenant_down(
        site, supervisor, tenant):
    other = subprocess.Popen(["sleep", "120"])
    try:
        [master] = haproxy_masters(site, tenant.id)
        write_pid_file(site, tenant.id, other.pid)  # while haproxy runs: adopted
        assert eventually(lambda: pid_file_names(site, tenant.id) == master, 5), \
            supervisor.lines()
        kill(master)
        write_pid_file(site, tenant.id, other.pid)  # and after a crash: started anew
        assert eventually(lambda: len(haproxy_masters(site, tenant.id)) == 1
                          and master not in haproxy_masters(site, tenant.id), 10), \
            supervisor.lines()
        assert eventually(lambda: pid_file_names(site, tenant.id)
                          == haproxy_masters(site, tenant.id)[0], 5), supervisor.lines()
        assert eventually(lambda: serves(tenant.port), 5)
        time.sleep(1)
        assert len(haproxy_masters(site, tenant.id)) == 1
        assert other.poll() is None  # never signalled
    finally:
        other.kill()
        other.wait()


def test_a_half_deleted_instance_gets_no_daemon(site, backend, listener_pki):
    """A folder holding only a rendered config, one holding only
    certificates: nothing stored to run, at the supervisor's start and in
    its scans; the stored tenant beside them runs."""
    only_rendered, only_certificates = str(uuid.uuid4()), str(uuid.uuid4())
    os.makedirs(folder_of(site, only_rendered))
    with open(rendered(site, only_rendered), "w") as file:
        file.write(haproxy_template(free_port(), backend.port))
    os.makedirs(os.path.join(folder_of(site, only_certificates), "certificates"))
    with open(os.path.join(folder_of(site, only_certificates), "certificates",
                           "localhost.pem"), "wb") as file:
        file.write(listener_pki.upload)
    stored = make_tenant(site, backend, listener_pki)
    kill(haproxy_masters(site, stored.id)[0])
    supervisor = Supervisor(site)
    try:
        supervisor.wait_ready()
        assert eventually(lambda: serves(stored.port), 5), supervisor.lines()
        time.sleep(1)  # two scans
        for half in (only_rendered, only_certificates):
            assert daemons_under(folder_of(site, half)) == [], supervisor.lines()
        assert supervisor.process.poll() is None
    finally:
        supervisor.stop()
        for half in (only_rendered, only_certificates):
            shutil.rmtree(folder_of(site, half))
        site.delete("/instances/" + stored.id)


def test_a_supervisor_killed_during_its_boot_converge_leaves_every_tenant_running_once(
        site, backend, listener_pki):
    tenants = [make_tenant(site, backend, listener_pki) for _ in range(16)]
    try:
        for made in tenants:
            kill(haproxy_masters(site, made.id)[0])
        first = Supervisor(site)
        try:
            assert eventually(lambda: any(" started (pid " in line for line in first.lines()),
                                          10, interval=0.005), first.lines()
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(5)
            half_way = first.lines()
        finally:
            first.stop()
        assert not any("supervisor: ready" in line for line in half_way), half_way
        second = Supervisor(site)
        try:
            second.wait_ready()
            for made in tenants:
                assert eventually(lambda: serves(made.port), 5), second.lines()
            time.sleep(1)  # two scans
            assert [len(haproxy_masters(site, made.id)) for made in tenants] == \
                [1] * len(tenants), second.lines()
        finally:
            second.stop()
    finally:
        for made in tenants:
            site.delete("/instances/" + made.id)


def test_a_config_whose_haproxy_exits_at_once_is_a_409_and_never_a_restart_loop(
        site, supervisor, tenant, backend):
    """haproxy -c passes; the bind fails at start (the port is held by a
    socket without SO_REUSEPORT). The old config keeps running in the same
    master, and a new instance with it is not stored: nothing to restart."""
    holder = listening_socket()
    try:
        busy = holder.getsockname()[1]
        [master] = haproxy_masters(site, tenant.id)
        log_before = len(supervisor.lines())
        reply = site.put("/instances/%s/haproxy" % tenant.id,
                         haproxy_template(busy, backend.port))
        assert reply.status == 409, reply
        newcomer = str(uuid.uuid4())
        reply = site.put("/instances/%s/haproxy" % newcomer, haproxy_template(busy, backend.port))
        assert reply.status == 409, reply
        time.sleep(2)  # four scans
        assert haproxy_masters(site, tenant.id) == [master]
        assert serves(tenant.port)
        assert haproxy_masters(site, newcomer) == []
        assert supervisor.lines()[log_before:] == []
    finally:
        holder.close()
