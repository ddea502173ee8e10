"""system/confinement: the wall behind the scan. haproxy's check of a config
that runs Lua (the scan refuses lua-load; here the scan is bypassed on
purpose, calling the daemon's check directly) reads no file but the
instance's own copy, writes nothing, and reaches no network. Real haproxy,
as root, as on an appliance."""
import os
import socket
import uuid

import pytest

from appliance_api.layout import Instance
from appliance_api.system import commands
from appliance_api.system.confinement import Confinement
from appliance_api.system.daemons import daemon_for

from conftest import make_config

LUA = """
local function try(path)
    local file = io.open(path, "r")
    if file then core.Alert("READ " .. path .. " " .. (file:read("*l") or "")); file:close()
    else core.Alert("NOREAD " .. path) end
end
for _, path in ipairs({%s}) do try(path) end
local written = io.open("%s", "w")
core.Alert("WRITE " .. tostring(written ~= nil))
os.execute("touch %s")
"""


@pytest.fixture
def two_instances(state_dir):
    own, other = (Instance(state_dir, str(uuid.uuid4())) for _ in range(2))
    for instance in (own, other):
        os.makedirs(instance.certificates_dir)
        with open(instance.certificate("key.pem"), "w") as file:
            file.write("SECRET of %s\n" % instance.id)
        os.chmod(instance.certificate("key.pem"), 0o644)  # even world-readable
    return own, other


def test_code_run_by_a_check_sees_only_the_instances_own_copy(state_dir, tmp_path, two_instances):
    own, other = two_instances
    outside = str(tmp_path / "written-by-the-check")
    readable = [own.certificate("key.pem"), other.certificate("key.pem"), "/etc/shadow",
                os.path.join(state_dir, "topology.json"), os.path.abspath(__file__)]
    with open(os.path.join(state_dir, "topology.json"), "w") as file:
        file.write("the pair's secret\n")
    with open(os.path.join(own.dir, "evil.lua"), "w") as file:
        file.write(LUA % (", ".join('"%s"' % p for p in readable), outside, outside))
    candidate = os.path.join(own.dir, ".haproxy.candidate.tmp")
    with open(candidate, "w") as file:
        file.write("global\n    lua-load %s/evil.lua\n" % own.dir)
    daemon = daemon_for("haproxy", own, make_config(state_dir))
    names = [".haproxy.candidate.tmp", "evil.lua", "certificates"]  # the Lua too, for this test

    with Confinement(own.dir, names) as confinement:
        output = commands.run(daemon_check_argv(daemon, candidate),
                              confinement=confinement).output
        copy = os.stat(confinement.path("certificates/key.pem"))
        assert (copy.st_uid, copy.st_gid, copy.st_mode & 0o777) == (0, confinement.gid, 0o640)
    assert "READ %s SECRET of %s" % (own.certificate("key.pem"), own.id) in output, output
    for path in readable[1:]:
        assert "NOREAD " + path in output, output
    assert "WRITE false" in output
    assert not os.path.exists(outside)
    assert [n for n in os.listdir(own.dir) if n.startswith(".confined")] == []

    # The same check unconfined reads another tenant's key: what the wall is for.
    bare = commands.run(daemon_check_argv(daemon, candidate), cwd=own.dir).output
    assert "READ %s SECRET of %s" % (other.certificate("key.pem"), other.id) in bare
    os.remove(outside)


def daemon_check_argv(daemon, path):
    return [daemon.binary, "-c", "-V", "-f", path]


def test_a_check_has_no_network_and_is_a_user_of_its_own(two_instances):
    """The machine's loopback (where the API and every tenant listen) cannot
    be reached from inside; the process is a uid no other has (two checks
    cannot ptrace or signal each other), and it can neither fork nor write."""
    own, _other = two_instances
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    probe = ("import os, socket\n"
             "print('uid', os.getuid(), os.getgid(), os.getgroups())\n"
             "try:\n"
             "    socket.create_connection(('127.0.0.1', %d), timeout=2); print('connected')\n"
             "except OSError as error:\n"
             "    print('refused', error.errno)\n"
             "print(sorted(os.listdir('/')))\n"
             "for attempt in (os.fork, lambda: open('certificates/new', 'w'),\n"
             "                lambda: open('certificates/key.pem', 'a')):\n"
             "    try:\n"
             "        attempt(); print('did it'); os._exit(0)\n"
             "    except OSError as error:\n"
             "        print('refused', error.errno)\n" % listener.getsockname()[1])
    with Confinement(own.dir, ["certificates"]) as confinement, \
            Confinement(own.dir, ["certificates"]) as other:
        assert confinement.uid != other.uid and confinement.uid > 65535
        result = commands.run(["/usr/bin/python3", "-I", "-c", probe], confinement=confinement)
    listener.close()
    lines = result.output.splitlines()
    assert lines[0] == "uid %d %d []" % (confinement.uid, confinement.gid), result.output
    assert [line.split()[0] for line in lines[3:6]] == ["refused"] * 3, result.output
    assert lines[1].startswith("refused"), result.output
    assert "var" in lines[2] or "tmp" in lines[2], result.output  # the instance's own path
    assert "root" not in lines[2] and "home" not in lines[2] and "proc" not in lines[2]


def test_a_valid_config_with_its_certificates_passes_confined(state_dir, pki_bundle):
    instance = Instance(state_dir, str(uuid.uuid4()))
    os.makedirs(instance.certificates_dir)
    with open(instance.certificate("localhost.pem"), "wb") as file:
        file.write(pki_bundle)
    os.chmod(instance.certificate("localhost.pem"), 0o600)
    candidate = os.path.join(instance.dir, ".haproxy.candidate.tmp")
    with open(candidate, "w") as file:
        file.write("global\n    user haproxy\ndefaults\n    mode http\n    timeout client 1s\n"
                   "    timeout server 1s\n    timeout connect 1s\nfrontend f\n"
                   "    bind 127.0.0.1:1 ssl crt %s ca-file /etc/ssl/certs/ca-certificates.crt"
                   " verify optional\n    errorfile 503 /etc/haproxy/errors/503.http\n"
                   % instance.certificate("localhost.pem"))
    ok, output = daemon_for("haproxy", instance, make_config(state_dir)).check(candidate)
    assert ok, output


@pytest.fixture
def pki_bundle():
    import pki

    ca_cert, ca_key = pki.make_ca("tenant CA")
    cert, key = pki.make_leaf(ca_cert, ca_key, "localhost", server=True, sans=["localhost"])
    return pki.pem_bundle(cert, key)


def test_whatever_runs_as_the_checks_uid_is_killed_when_it_ends(two_instances):
    """Nothing a check starts may outlive it (a review left `sleep 120` running
    after a check as nobody): close() kills every process of its uid."""
    import subprocess
    import time

    own, _other = two_instances
    confinement = Confinement(own.dir, [])
    leftover = subprocess.Popen(["/bin/sleep", "120"], preexec_fn=lambda: os.setresuid(
        confinement.uid, confinement.uid, confinement.uid))
    bystander = subprocess.Popen(["/bin/sleep", "120"])
    try:
        confinement.close()
        assert leftover.wait(5) == -9
        time.sleep(0.1)
        assert bystander.poll() is None
        assert not os.path.exists(confinement.root)
    finally:
        for process in (leftover, bystander):
            process.kill()
            process.wait()


def test_the_tree_of_a_check_killed_half_way_is_swept_by_the_next_change(app, state_dir,
                                                                        instance_id):
    """A SIGKILL during haproxy -c leaves its tree (copies of the keys) in the
    instance folder; the next change of the instance removes it, and goes on."""
    import signal

    instance = Instance(state_dir, instance_id)
    page = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry\n"
    assert app.put("/instances/%s/custom503" % instance_id, page).status_int == 201
    child = os.fork()
    if child == 0:
        try:
            Confinement(instance.dir, ["custom503.http"])  # made, never closed
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(child, 0)
    left = [n for n in os.listdir(instance.dir) if n.startswith(".confined-")]
    assert len(left) == 1 and os.path.isdir(os.path.join(instance.dir, left[0]))
    assert app.put("/instances/%s/custom503" % instance_id, page + b"x").status_int == 201
    assert [n for n in os.listdir(instance.dir) if n.startswith(".confined-")] == []
