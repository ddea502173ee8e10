"""GET /manifest: every stored file with its SHA-256, and the topology without
its secret; what a standby compares with its own."""
import hashlib
import json

PAGE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry\n"


def test_manifest_lists_each_stored_file_with_its_digest(app, instance_id):
    assert json.loads(app.get("/manifest").text)["instances"] == {}
    app.put("/instances/%s/custom503" % instance_id, PAGE)
    shown = json.loads(app.get("/manifest").text)
    assert shown["active_node"] == 1  # a SINGLE appliance is its own active node
    assert shown["instances"] == {instance_id: {"custom503": hashlib.sha256(PAGE).hexdigest()}}
    assert shown["topology"] == {"topology": "SINGLE", "role": "PRIMARY", "ha_ip": "",
                                 "primary_ip": "", "all_ips": [], "routing-mode": "LAYER2"}
    assert "secret" not in app.get("/manifest").text


def test_what_build_makes_passes_the_check_a_standby_makes(app, config, instance_id):
    from appliance_api import manifest

    app.put("/instances/%s/custom503" % instance_id, PAGE)
    built = manifest.build(config)
    assert manifest.checked(json.loads(json.dumps(built))) == (1, built["instances"])


def test_a_socket_or_fifo_where_a_stored_file_belongs_fails_no_manifest(app, state_dir,
                                                                        instance_id):
    """The review's case: a daemon's socket on custom503.http made GET /manifest
    a 500 for the whole appliance, and so stopped every tenant's sync."""
    import os
    import socket
    import uuid

    page = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry\n"
    other = str(uuid.uuid4())
    for instance in (instance_id, other):
        assert app.put("/instances/%s/custom503" % instance, page).status_int == 201
    folder = os.path.join(state_dir, "instances", instance_id)
    os.rename(os.path.join(folder, "custom503.http"), os.path.join(folder, "page.bak"))
    sock = socket.socket(socket.AF_UNIX)
    here = os.getcwd()
    os.chdir(folder)  # a unix socket's address is short: bind it by its relative name
    try:
        sock.bind("custom503.http")
    finally:
        os.chdir(here)
    other_folder = os.path.join(state_dir, "instances", other)
    os.mkdir(os.path.join(other_folder, "certificates"))
    os.mkfifo(os.path.join(other_folder, "certificates", "x.pem"))
    try:
        answer = app.get("/manifest")
        assert answer.status_int == 200
        instances = json.loads(answer.text)["instances"]
        assert "custom503" not in instances.get(instance_id, {})
        assert instances[other] == {"custom503": hashlib.sha256(page).hexdigest()}
    finally:
        sock.close()
