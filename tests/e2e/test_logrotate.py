"""The installed logrotate configuration rotates the daemons' logs in each
instance folder, for real: after a rotation haproxy and stunnel keep logging
to the new (truncated) file and keep serving, and a reload that reads its
verdict from the log still works."""
import os
import ssl
import subprocess

from .conftest import ROOT, pki_tool
from .helpers import eventually, free_port, haproxy_template, http_get, stunnel_template
from .test_certificates import listener_certificate

LOGGING = "    log stdout format raw daemon\n"


def read(path):
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return b""


def test_one_rotation_keeps_both_daemons_logging_and_serving(api, backend, instance_id,
                                                             tmp_path):
    instance_dir = os.path.join(api.instances_dir, instance_id)
    base = "/instances/" + instance_id
    http_port, tls_port = free_port(), free_port()
    ca = pki_tool.make_ca("tenant CA")
    assert api.put(base + "/certificates/localhost.pem", listener_certificate(ca)[0]).status == 201
    haproxy = haproxy_template(http_port, backend.port).replace(
        "defaults\n", "    " + LOGGING.strip() + "\ndefaults\n    log global\n    option httplog\n")
    assert api.put(base + "/haproxy", haproxy).status == 201
    assert api.put(base + "/stunnel", stunnel_template(tls_port, http_port)).status == 201
    pids = (api.service_pid(instance_id, "haproxy"), api.service_pid(instance_id, "stunnel"))
    haproxy_log = os.path.join(instance_dir, "haproxy.log")
    stunnel_log = os.path.join(instance_dir, "stunnel.log")
    tls = ssl.create_default_context(cafile=None)
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE

    def traffic(path):
        assert http_get(http_port, path)[0] == 200
        assert http_get(tls_port, path, context=tls)[0] == 200

    traffic("/before-rotation")
    assert eventually(lambda: b"GET /before-rotation" in read(haproxy_log), 5)
    assert b"accepted connection" in read(stunnel_log)

    image = tmp_path / "image"
    subprocess.run(["make", "-s", "-C", ROOT, "install", "DESTDIR=%s" % image,
                    "STATEDIR=%s" % api.state_dir], check=True)
    rotate = subprocess.run(["logrotate", "-v", "-f", "-s", str(tmp_path / "logrotate.status"),
                             str(image / "etc" / "logrotate.d" / "appliance-api")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert rotate.returncode == 0, rotate.stdout
    assert b"GET /before-rotation" in read(haproxy_log + ".1")
    assert b"accepted connection" in read(stunnel_log + ".1")
    assert b"GET /before-rotation" not in read(haproxy_log)

    traffic("/after-rotation")
    assert eventually(lambda: b"GET /after-rotation" in read(haproxy_log), 5)
    assert eventually(lambda: b"accepted connection" in read(stunnel_log), 5)
    for log in (haproxy_log, stunnel_log):
        # O_APPEND writers continue at the new end: no hole of NULs where the old text was.
        assert b"\0" not in read(log)
        assert len(read(log)) < len(read(log + ".1")) + 4096

    # A certificate change reloads stunnel and haproxy, whose verdicts come from these logs.
    reply = api.put(base + "/certificates/localhost.pem", listener_certificate(ca)[0])
    assert reply.status == 201, reply
    assert "reloaded" in reply.body
    assert (api.service_pid(instance_id, "haproxy"),
            api.service_pid(instance_id, "stunnel")) == pids
    traffic("/after-reload")
