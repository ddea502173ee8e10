"""GET /status, /service_status, /instances and /instances/:instance, in process."""
import json
import os
import subprocess
import sys

from conftest import ROOT

A = "635bbdc6-65cd-41fc-b879-22c02aaf8951"
B = "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c"


def make_instance(state_dir, instance_id, *names):
    """An instance folder holding the named files (e.g. haproxy.cfg)."""
    from appliance_api.layout import Instance

    instance = Instance(state_dir, instance_id)
    os.makedirs(instance.certificates_dir, exist_ok=True)
    for name in names:
        path = os.path.join(instance.dir, name)
        with open(path, "w") as file:
            file.write("# %s\n" % name)
    return instance


def test_instances_empty_body_when_none(app):
    response = app.get("/instances")
    assert response.status_int == 200
    assert response.body == b""
    assert response.content_type == "text/plain"


def test_instances_lists_sorted_ids_with_files_only(app, state_dir):
    make_instance(state_dir, B, "haproxy.cfg")
    make_instance(state_dir, A, "certificates/www.example.com.pem")
    make_instance(state_dir, "0e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c", "lock", "haproxy.log")
    os.makedirs(os.path.join(state_dir, "instances", "not-an-id"))
    assert app.get("/instances").text == A + "\n" + B + "\n"


def test_instance_exists_when_any_file_exists(app, state_dir):
    make_instance(state_dir, A, "custom503.http")
    response = app.get("/instances/" + A)
    assert (response.status_int, response.text) == (200, "OK\n")
    response = app.get("/instances/" + B, expect_errors=True)
    assert (response.status_int, response.text) == (404, "Not Found\n")


def test_instance_with_only_lock_and_logs_does_not_exist(app, state_dir):
    make_instance(state_dir, A, "lock", "haproxy.log", "haproxy.pid")
    assert app.get("/instances/" + A, expect_errors=True).status_int == 404


def test_status_keys_and_types_match_the_original(app):
    response = app.get("/status")
    assert response.content_type == "application/json"
    body = json.loads(response.text)
    original = {"network_tx", "active_node", "network_rx", "haproxy_count", "hostname",
                "fencing_daemon_status", "stunnel_count", "user_cpu", "system_cpu",
                "software_irq", "load"}
    assert original <= set(body)
    for key in ("network_tx", "network_rx", "user_cpu", "system_cpu", "software_irq"):
        assert isinstance(body[key], float) and body[key] >= 0, key
    assert body["active_node"] == 1 and isinstance(body["active_node"], int)
    assert body["haproxy_count"] == "0" and body["stunnel_count"] == "0"
    assert isinstance(body["hostname"], str) and body["hostname"]
    assert body["fencing_daemon_status"] == "OK"
    assert len(body["load"]) == 3 and all(isinstance(x, str) for x in body["load"])
    float(body["load"][0])


def test_status_counts_live_daemons_not_stale_pid_files(app, state_dir, fake_daemons):
    first = make_instance(state_dir, A, "haproxy.cfg", "haproxy.rendered.cfg",
                          "stunnel.conf", "stunnel.rendered.conf")
    second = make_instance(state_dir, B, "haproxy.cfg", "haproxy.rendered.cfg")
    fake_daemons("haproxy", first.rendered("haproxy"), first.pid_file("haproxy"))
    fake_daemons("stunnel4", first.rendered("stunnel"), first.pid_file("stunnel"))
    # A stale pid file: the pid of a live process that is not this instance's haproxy.
    with open(second.pid_file("haproxy"), "w") as file:
        file.write("%d\n" % os.getpid())
    body = json.loads(app.get("/status").text)
    assert (body["haproxy_count"], body["stunnel_count"]) == ("1", "1")


def test_status_role_and_fencing_sources(state_dir, tmp_path):
    import webtest
    from appliance_api.app import make_application

    from conftest import VERIFIED, make_config

    role = tmp_path / "role"
    role.write_text("standby\n")
    config = make_config(state_dir, status={"role_file": str(role), "fencing_command": "false"})
    body = webtest.TestApp(make_application(config)).get("/status", extra_environ=VERIFIED).json
    assert body["active_node"] == 0
    assert body["fencing_daemon_status"] == "FAILED (exit 1)"
    role.write_text("active\n")
    pid_file = tmp_path / "fenced.pid"
    pid_file.write_text("%d\n" % os.getpid())
    config = make_config(state_dir, status={"role_file": str(role),
                                            "fencing_pid_file": str(pid_file)})
    body = webtest.TestApp(make_application(config)).get("/status", extra_environ=VERIFIED).json
    assert (body["active_node"], body["fencing_daemon_status"]) == (1, "OK")
    pid_file.write_text("999999999\n")
    body = webtest.TestApp(make_application(config)).get("/status", extra_environ=VERIFIED).json
    assert body["fencing_daemon_status"] == "DOWN"


def test_service_status_layout(app, state_dir, fake_daemons):
    both = make_instance(state_dir, A, "haproxy.cfg", "haproxy.rendered.cfg",
                         "stunnel.conf", "stunnel.rendered.conf")
    one = make_instance(state_dir, B, "haproxy.cfg", "haproxy.rendered.cfg")
    haproxy = fake_daemons("haproxy", both.rendered("haproxy"), both.pid_file("haproxy"))
    response = app.get("/service_status")
    assert response.text == (
        A + " " * 16 + "DEGRADED\n"
        "  haproxy          running (pid %d)\n"
        "  stunnel          stopped\n"
        "%s                DOWN\n"
        "  haproxy          stopped\n" % (haproxy.pid, B))
    stunnel = fake_daemons("stunnel4", both.rendered("stunnel"), both.pid_file("stunnel"))
    other = fake_daemons("haproxy", one.rendered("haproxy"), one.pid_file("haproxy"))
    assert app.get("/service_status").text == (
        "%-52sOK\n  haproxy          running (pid %d)\n  stunnel          running (pid %d)\n"
        "%-52sOK\n  haproxy          running (pid %d)\n"
        % (A, haproxy.pid, stunnel.pid, B, other.pid))


def test_service_status_treats_stale_pid_files_as_stopped(app, state_dir, fake_daemons):
    instance = make_instance(state_dir, A, "haproxy.cfg", "haproxy.rendered.cfg",
                             "stunnel.conf", "stunnel.rendered.conf")
    other = make_instance(state_dir, B, "haproxy.cfg", "haproxy.rendered.cfg")
    # Another instance's live haproxy: right name, wrong config file.
    fake_daemons("haproxy", other.rendered("haproxy"), other.pid_file("haproxy"))
    with open(instance.pid_file("haproxy"), "w") as file:
        file.write(open(other.pid_file("haproxy")).read())
    # A pid that no process has, and a pid file with garbage in it.
    with open(instance.pid_file("stunnel"), "w") as file:
        file.write("4194304999\n")
    text = app.get("/service_status").text
    assert text.splitlines()[:3] == ["%-52sDOWN" % A, "  haproxy          stopped",
                                     "  stunnel          stopped"]
    with open(instance.pid_file("haproxy"), "w") as file:
        file.write("not a pid\n")
    assert app.get("/service_status").text.splitlines()[1] == "  haproxy          stopped"


def test_a_zombie_is_not_running(app, state_dir):
    instance = make_instance(state_dir, A, "haproxy.cfg", "haproxy.rendered.cfg")
    script = os.path.join(state_dir, "haproxy")
    with open(script, "w") as file:
        file.write("#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o755)
    zombie = subprocess.Popen([script, instance.rendered("haproxy")])
    try:
        while True:  # exited but not yet reaped: a zombie
            with open("/proc/%d/stat" % zombie.pid) as stat:
                if stat.read().split(")")[1].split()[0] == "Z":
                    break
        with open(instance.pid_file("haproxy"), "w") as file:
            file.write("%d\n" % zombie.pid)
        assert "  haproxy          stopped" in app.get("/service_status").text
    finally:
        zombie.wait()


def test_reads_import_neither_psutil_nor_cryptography(state_dir):
    """Every request is a new process: a read must not pay for the heavy
    modules, and the plainest reads not even for `re` (5 ms of start-up);
    none for `signal`, which only a change needs (system/signals.py)."""
    code = (
        "import sys, io\n"
        "sys.path.insert(0, %r)\n"
        "from appliance_api.app import application\n"
        "environ = {'REQUEST_METHOD': 'GET', 'PATH_INFO': %r, 'SSL_CLIENT_VERIFY': 'SUCCESS',\n"
        "           'APPLIANCE_API_CONFIG': %r, 'wsgi.input': io.BytesIO(), 'wsgi.errors': sys.stderr}\n"
        "status = []\n"
        "application(environ, lambda s, h: status.append(s))\n"
        "print(status[0], 'psutil' in sys.modules, 'cryptography' in sys.modules,\n"
        "      're' in sys.modules, 'signal' in sys.modules)\n")
    ini = os.path.join(state_dir, "api.ini")
    with open(ini, "w") as file:
        file.write("[paths]\nstate_dir = %s\n" % state_dir)
    make_instance(state_dir, B, "haproxy.cfg")
    lib = os.path.join(ROOT, "lib")
    for path, expected in (("/instances", "200 OK False False False False"),
                           ("/instances/" + A, "404 Not Found False False False False"),
                           ("/instances/" + B, "200 OK False False False False"),
                           ("/instances/%s/haproxy" % A,
                            "404 Not Found False False False False"),
                           ("/instances/%s/certificates/x.pem" % A,
                            "404 Not Found False False False False"),
                           ("/service_status", "200 OK False False False False"),
                           ("/nowhere", "403 Forbidden False False False False"),
                           ("/status", "200 OK False False True False"),  # json needs re
                           ("/listeners", "200 OK False False True False"),
                           ("/instances/%s/stats" % B, "200 OK False False True False"),
                           ("/metrics", "200 OK False False True False")):
        output = subprocess.run([sys.executable, "-c", code % (lib, path, ini)], check=True,
                                stdout=subprocess.PIPE, text=True).stdout.strip()
        assert output == expected, path


def test_an_old_empty_pid_file_is_stale_at_once(app, state_dir):
    import time

    instance = make_instance(state_dir, A, "haproxy.cfg", "haproxy.rendered.cfg")
    open(instance.pid_file("haproxy"), "w").close()
    old = time.time() - 60
    os.utime(instance.pid_file("haproxy"), (old, old))
    started = time.monotonic()
    assert "  haproxy          stopped" in app.get("/service_status").text
    assert time.monotonic() - started < 0.4  # no wait for a rewrite that is not coming
