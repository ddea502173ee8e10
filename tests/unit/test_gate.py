"""gate.py: the change gate every change passes, whoever makes it."""
import os

import pytest

from appliance_api.errors import ClusterTransition
from appliance_api.gate import change_gate
from appliance_api.layout import topology_lock_path
from appliance_api.system import Busy
from conftest import hold_in_another_process, make_config


def test_no_change_while_the_topology_changes(config):
    child = hold_in_another_process(topology_lock_path(config.state_dir))
    try:
        with pytest.raises(ClusterTransition):
            with change_gate(config):
                pytest.fail("the gate let a change through during a transition")
    finally:
        child.stdin.close()
        child.wait()


def test_a_change_over_the_cap_waits_then_is_refused_busy(state_dir):
    config = make_config(state_dir, limits={"concurrent_changes": "1", "change_wait": "0.2"})
    with change_gate(config):
        with pytest.raises(Busy) as raised:
            with change_gate(config):
                pass
    assert raised.value.retry_after == 1
    with change_gate(config):  # the slot is free again
        assert os.path.isdir(os.path.join(state_dir, "change-slots"))
