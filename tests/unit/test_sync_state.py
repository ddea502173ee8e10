"""sync_state.py: what the sync records, and the /status keys of it."""
import os

from appliance_api.layout import sync_state_path
from appliance_api.sync_state import load_state, status_keys, store_state


def test_a_stored_state_is_read_back_and_shown_as_status_keys(state_dir):
    store_state(state_dir, {"last_success": 12.5, "in_step": 3, "instances": 4,
                            "failing": {"x": "why"}, "error": "", "refused": ""})
    assert load_state(state_dir)["in_step"] == 3
    assert status_keys(state_dir) == {
        "sync_last_success": 12.5, "sync_instances_in_step": 3, "sync_instances": 4,
        "sync_failing": {"x": "why"}, "sync_error": "", "sync_refused": "",
        "sync_unreachable_since": None}


def test_no_state_or_a_broken_one_is_an_empty_one(state_dir):
    assert load_state(state_dir) == {}
    with open(sync_state_path(state_dir), "w") as file:
        file.write("{not json")
    assert load_state(state_dir) == {}
    assert status_keys(state_dir)["sync_failing"] == {}
    assert os.path.exists(sync_state_path(state_dir))  # a read never rewrites it
