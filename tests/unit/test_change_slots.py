"""The appliance-wide cap on concurrent changes (system/slots.py), in process:
slots held by other processes make a change wait, then answer 503 with
Retry-After having changed nothing; reads never wait."""
import fcntl
import os
import subprocess
import sys
import time

import webtest

from appliance_api.app import make_application
from appliance_api.layout import Instance, change_slot_path
from conftest import VERIFIED, make_config

PAGE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nsorry\n"
HOLD = """
import fcntl, os, sys, time
fds = []
for path in sys.argv[1:]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fds.append(fd)
print("held", flush=True)
time.sleep(60)
"""


def hold_slots(state_dir, numbers):
    """Another process holding these slots, as concurrent changes would."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD] +
                              [change_slot_path(state_dir, n) for n in numbers],
                              stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"held\n"
    return holder


def capped_app(state_dir, slots=2, wait=0.3):
    config = make_config(state_dir, limits={"concurrent_changes": str(slots),
                                            "change_wait": str(wait)})
    return webtest.TestApp(make_application(config), extra_environ=VERIFIED)


def test_a_change_over_the_cap_waits_then_gets_503_and_changes_nothing(state_dir, instance_id):
    app = capped_app(state_dir)
    holder = hold_slots(state_dir, [0, 1])
    try:
        started = time.monotonic()
        response = app.put("/instances/%s/custom503" % instance_id, PAGE, expect_errors=True)
        waited = time.monotonic() - started
        assert response.status_int == 503, response.text
        assert response.headers["Retry-After"] == "1"
        assert response.text == ("Too many changes in progress; retry later\n"
                                 "2 changes run at once on this appliance\n")
        assert 0.3 <= waited < 2
        assert not os.path.exists(Instance(state_dir, instance_id).dir)
        # Reads are not capped.
        assert app.get("/instances").text == ""
        assert app.get("/instances/%s" % instance_id, expect_errors=True).status_int == 404
        assert app.delete("/instances/%s" % instance_id, expect_errors=True).status_int == 503
    finally:
        holder.kill()
        holder.wait()
    response = app.put("/instances/%s/custom503" % instance_id, PAGE)
    assert response.status_int == 201
    assert app.get("/instances/%s/custom503" % instance_id).body == PAGE


def test_a_change_takes_the_slot_another_frees_while_it_waits(state_dir, instance_id):
    app = capped_app(state_dir, slots=1, wait=3)
    holder = hold_slots(state_dir, [0])
    subprocess.Popen(["sh", "-c", "sleep 0.5; kill %d" % holder.pid])
    started = time.monotonic()
    response = app.put("/instances/%s/custom503" % instance_id, PAGE)
    assert response.status_int == 201
    assert 0.4 < time.monotonic() - started < 3
    holder.wait()


def test_one_free_slot_is_enough(state_dir, instance_id):
    app = capped_app(state_dir, slots=3, wait=0)
    holder = hold_slots(state_dir, [0, 2])
    try:
        assert app.put("/instances/%s/custom503" % instance_id, PAGE).status_int == 201
    finally:
        holder.kill()
        holder.wait()


def test_a_slot_is_free_again_after_the_change(state_dir, instance_id):
    app = capped_app(state_dir, slots=1, wait=0)
    for _ in range(3):
        assert app.put("/instances/%s/custom503" % instance_id, PAGE).status_int == 201
    fd = os.open(change_slot_path(state_dir, 0), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the API kept it
    os.close(fd)
