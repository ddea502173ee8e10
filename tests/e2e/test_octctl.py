"""octctl, the operator's command, on the state folder of the API the tests run
behind lighttpd, with real haproxy and stunnel: what it reads is what the API
answers, and what it does the daemons really do."""
import json
import os
import signal
import uuid

import pytest

from .helpers import (eventually, free_port, haproxy_template, http_get, octctl,
                      pid_gone, stunnel_template)

BROKEN_HAPROXY = "global\n    no-such-keyword here\n"


@pytest.fixture(scope="module")
def lb(api, backend, listener_pki):
    """haproxy behind stunnel, through the API."""
    instance = str(uuid.uuid4())
    port, tls_port = free_port(), free_port()
    with api.client() as appliance:  # as a controller would, with the client library
        appliance.put_certificate(instance, "localhost.pem", listener_pki.upload)
        appliance.put_config(instance, "haproxy", haproxy_template(port, backend.port))
        appliance.put_config(instance, "stunnel", stunnel_template(tls_port, port))
        yield type("Lb", (), dict(id=instance, port=port, tls_port=tls_port,
                                  dir=os.path.join(api.instances_dir, instance)))
        appliance.delete_instance(instance)


def serves(lb, listener_pki):
    try:
        return http_get(lb.tls_port, context=listener_pki.context, timeout=2)[2] == b"backend-ok"
    except OSError:
        return False


def test_status_all_is_service_status_exactly(api, lb):
    result = octctl(api, "status", "all")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == api.service_status()
    assert octctl(api, "status").stdout == result.stdout  # "all" is the default


def test_status_of_one_instance_and_json(api, lb):
    lines = api.service_status().splitlines()
    start = lines.index(next(line for line in lines if line.startswith(lb.id)))
    result = octctl(api, "status", lb.id)
    assert result.returncode == 0
    assert result.stdout.splitlines() == lines[start:start + 3]
    record = json.loads(octctl(api, "status", lb.id, "--json").stdout)
    assert record == [{"id": lb.id, "status": "OK", "services": {
        "haproxy": {"running": True, "pid": api.service_pid(lb.id, "haproxy")},
        "stunnel": {"running": True, "pid": api.service_pid(lb.id, "stunnel")}}}]


def test_instances(api, lb):
    result = octctl(api, "instances")
    assert result.returncode == 0
    assert result.stdout.splitlines() == api.instances()
    with api.client() as appliance:
        assert json.loads(octctl(api, "instances", "--json").stdout) == appliance.instances()


def test_a_dead_daemon_is_exit_1_and_start_brings_it_back(api, lb, listener_pki):
    pid = api.service_pid(lb.id, "stunnel")
    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: pid_gone(pid))
    result = octctl(api, "status", "all")
    assert result.returncode == 1
    assert "%-52sDEGRADED" % lb.id in result.stdout.splitlines()
    assert octctl(api, "status", lb.id).returncode == 1

    result = octctl(api, "start", lb.id)
    assert result.returncode == 0, result.stderr
    haproxy_pid = api.service_pid(lb.id, "haproxy")
    assert result.stdout.splitlines()[0] == \
        "haproxy daemon for %s already running (pid %d)" % (lb.id, haproxy_pid)
    stunnel_pid = api.service_pid(lb.id, "stunnel")
    assert result.stdout.splitlines()[1] == \
        "stunnel daemon for %s started (pid %d)" % (lb.id, stunnel_pid)
    assert serves(lb, listener_pki)
    assert octctl(api, "status", "all").returncode == 0


def test_stop_one_service_then_start_it(api, lb, listener_pki):
    pid = api.service_pid(lb.id, "haproxy")
    result = octctl(api, "stop", lb.id, "haproxy")
    assert (result.returncode, result.stdout) == (0, "haproxy daemon %s killed.\n" % lb.id)
    assert eventually(lambda: pid_gone(pid))
    assert api.service_pid(lb.id, "haproxy") is None
    assert api.service_pid(lb.id, "stunnel") is not None  # the other one is untouched
    assert os.path.exists(os.path.join(lb.dir, "haproxy.cfg"))  # its files stay
    result = octctl(api, "reload", lb.id, "haproxy")
    assert (result.returncode, result.stderr) == (1, "haproxy daemon %s is not running: not "
                                                     "reloaded (octctl start starts it)\n" % lb.id)
    result = octctl(api, "start", lb.id, "haproxy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("haproxy daemon for %s started (pid " % lb.id)
    assert eventually(lambda: serves(lb, listener_pki), 5)


def test_reload_keeps_the_master_and_is_recorded(api, lb):
    pids = api.service_pid(lb.id, "haproxy"), api.service_pid(lb.id, "stunnel")
    result = octctl(api, "reload", lb.id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "haproxy daemon for %s reloaded (pid %d)" % (lb.id, pids[0]),
        "stunnel daemon for %s reloaded (pid %d)" % (lb.id, pids[1])]
    report = json.loads(octctl(api, "show", lb.id, "--json").stdout)
    assert report["services"]["haproxy"]["last_reload"].endswith(
        " haproxy daemon for %s reloaded (pid %d)" % (lb.id, pids[0]))


def test_show(api, lb):
    result = octctl(api, "show", lb.id, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    haproxy_pid, stunnel_pid = (api.service_pid(lb.id, s) for s in ("haproxy", "stunnel"))
    assert report["id"] == lb.id and report["status"] == "OK"
    assert report["services"]["haproxy"]["pid"] == haproxy_pid
    assert report["services"]["haproxy"]["listeners"] == ["127.0.0.1:%d" % lb.port]
    assert report["services"]["stunnel"]["pid"] == stunnel_pid
    assert report["services"]["stunnel"]["listeners"] == ["127.0.0.1:%d" % lb.tls_port]
    assert report["service_ips"] == []  # loopback is never a service IP
    [certificate] = report["certificates"]
    assert certificate["name"] == "localhost.pem" and certificate["cn"] == "localhost"
    assert 360 <= certificate["days_left"] <= 3660
    assert report["custom503"] is False
    text = octctl(api, "show", lb.id).stdout
    assert "haproxy       running (pid %d)" % haproxy_pid in text
    assert "  localhost.pem  CN=localhost  expires %s" % certificate["expires"] in text


def test_check_runs_the_daemons_checks_and_changes_nothing(api, lb):
    before = {name: os.stat(os.path.join(lb.dir, name)).st_mtime_ns
              for name in os.listdir(lb.dir) if not name.endswith((".log", ".sock"))}
    result = octctl(api, "check", lb.id)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "haproxy: configuration is valid"
    assert "  Configuration file is valid" in lines
    assert "stunnel: the API's rules pass (stunnel has no check-only mode: its option names " \
        "are checked at start or reload only)" in lines
    assert "  %s/certificates/localhost.pem loads in OpenSSL" % lb.dir in lines
    after = {name: os.stat(os.path.join(lb.dir, name)).st_mtime_ns
             for name in os.listdir(lb.dir) if not name.endswith((".log", ".sock"))}
    assert after == before


def test_a_stored_config_gone_bad_fails_check_and_reload(api, lb, listener_pki):
    """A file changed behind the API's back (by hand, a disk fault): check
    names the problem, and a reload fails with the old worker serving on."""
    template = os.path.join(lb.dir, "haproxy.cfg")
    with open(template) as file:
        good = file.read()
    pid = api.service_pid(lb.id, "haproxy")
    try:
        with open(template, "w") as file:
            file.write(BROKEN_HAPROXY)
        result = octctl(api, "check", lb.id, "haproxy")
        assert result.returncode == 1
        assert result.stdout.splitlines()[0] == "haproxy: invalid configuration"
        assert "no-such-keyword" in result.stdout
        result = octctl(api, "reload", lb.id, "haproxy")
        assert result.returncode == 1
        assert result.stderr.startswith("octctl reload: haproxy failed to reload\n")
        assert api.service_pid(lb.id, "haproxy") == pid
        assert serves(lb, listener_pki)
        report = json.loads(octctl(api, "show", lb.id, "--json").stdout)
        assert " failed: haproxy failed to reload" in report["services"]["haproxy"]["last_reload"]
    finally:
        with open(template, "w") as file:
            file.write(good)
        assert octctl(api, "reload", lb.id, "haproxy").returncode == 0


@pytest.mark.parametrize("arguments, code, message", [
    (["show", "NOT-AN-ID"], 2, "octctl show: not an instance id: 'NOT-AN-ID' (a lower-case UUID)\n"),
    (["status", "7E9F91EB-B3E6-4E3B-A1A7-D6F7FDC1DE7C"], 2, "octctl status: not an instance id"),
    (["show", "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c"], 2,
     "octctl show: no instance 7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c on this appliance\n"),
])
def test_bad_and_unknown_ids(api, lb, arguments, code, message):
    result = octctl(api, *arguments)
    assert result.returncode == code
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_missing_service_and_unreadable_config(api, lb, tmp_path):
    result = octctl(api, "start", lb.id, "nginx")
    assert result.returncode == 2  # argparse: not a service
    assert "invalid choice: 'nginx'" in result.stderr
    result = octctl(api, "status", config=str(tmp_path / "missing.ini"))
    assert result.returncode == 2
    assert result.stderr == "octctl status: Configuration file %s is not readable: " \
        "No such file or directory\n" % (tmp_path / "missing.ini")
    bad = tmp_path / "bad.ini"
    bad.write_text("[paths]\nstate_dri = /x\n")
    result = octctl(api, "instances", config=str(bad))
    assert (result.returncode, result.stderr) == (
        2, "octctl instances: Configuration file %s: unknown key state_dri in [paths]\n" % bad)
