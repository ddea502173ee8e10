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
