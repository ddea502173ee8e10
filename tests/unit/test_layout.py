"""layout.py: the instance folder's names, and the plain tests that stand in
for the routes' regular expressions."""
import os
import re
import uuid

import pytest

from appliance_api import layout


@pytest.mark.parametrize("name", [str(uuid.UUID(int=n)) for n in (0, 1, 2 ** 128 - 1)] + [
    str(uuid.uuid4()) for _ in range(50)])
def test_every_canonical_uuid_is_an_instance_id(name):
    assert layout.is_instance_id(name) and re.fullmatch(layout.INSTANCE_ID, name)


@pytest.mark.parametrize("name", [
    "", "x", str(uuid.uuid4()).upper(), str(uuid.uuid4()) + "\n", "-" * 36,
    "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7", "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7cc",
    "7e9f91ebb-3e6-4e3b-a1a7-d6f7fdc1de7c", "../../../../etc/passwd",
    "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7g"])
def test_anything_else_is_not_and_both_tests_agree(name):
    assert not layout.is_instance_id(name)
    assert not re.fullmatch(layout.INSTANCE_ID, name)


@pytest.mark.parametrize("name, ok", [
    ("www.example.com.pem", True), ("a.pem", True), ("x" * 251 + ".pem", True),
    ("x" * 252 + ".pem", False), (".hidden.pem", False), ("a.crt", False),
    ("a b.pem", False), ("../a.pem", False), ("a/b.pem", False), (".pem", False)])
def test_certificate_names_by_either_test(name, ok):
    assert layout.is_certificate_name(name) is ok
    assert bool(re.fullmatch(layout.CERTIFICATE_NAME, name)) is ok


def test_a_template_is_filled_with_the_address_and_the_absolute_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert layout.fill_template("bind {MYIP}:80 crt {INSTANCE_DIR}/certificates/a.pem",
                                "state/i", "10.0.0.2") == \
        "bind 10.0.0.2:80 crt %s/state/i/certificates/a.pem" % tmp_path


def test_an_instance_exists_only_with_an_uploaded_file(state_dir, instance_id):
    instance = layout.Instance(state_dir, instance_id)
    os.makedirs(instance.certificates_dir)
    for own in ("lock", "haproxy.pid", "reload.pending", "haproxy.rendered.cfg"):
        open(os.path.join(instance.dir, own), "w").close()
    assert not instance.exists() and layout.instance_ids(state_dir) == []
    open(instance.certificate("a.pem"), "w").close()
    assert instance.exists() and layout.instance_ids(state_dir) == [instance_id]
    assert [i.id for i in layout.existing_instances(state_dir)] == [instance_id]
    with pytest.raises(ValueError):
        layout.Instance(state_dir, "../escape")


def test_the_api_s_own_files_are_all_managed_names():
    """A config may name none of them (configscan): every file the API keeps
    in an instance folder is in MANAGED_NAMES."""
    for name in ("lock", "master.sock", "reload.pending", "stopped.by-operator",
                 "haproxy.counters", "haproxy.pid", "stunnel.log", "haproxy.outcome",
                 "stunnel.listeners", "haproxy.cfg", "stunnel.rendered.conf"):
        assert name in layout.MANAGED_NAMES
