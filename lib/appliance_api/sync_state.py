"""What the standby's sync records of its runs (sync-state.json), and the
keys /status shows of it. Apart from sync.py, which runs through the
application itself: /status must not import what imports the application."""
import json

from .layout import sync_state_path
from .system import files


def load_state(state_dir):
    data = files.read(sync_state_path(state_dir))
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {}


def store_state(state_dir, state):
    files.write_atomic(sync_state_path(state_dir), json.dumps(state).encode(), 0o644)


def status_keys(state_dir):
    """What /status adds on a node of a pair (new keys; the original ones stay)."""
    state = load_state(state_dir)
    return {"sync_last_success": state.get("last_success"),
            "sync_instances_in_step": state.get("in_step"),
            "sync_instances": state.get("instances"),
            "sync_failing": state.get("failing", {}),
            "sync_error": state.get("error", ""),
            # Why the last judged manifest was not acted on (mass delete,
            # malformed, oversized), "" when it was.
            "sync_refused": state.get("refused", ""),
            "sync_unreachable_since": state.get("unreachable_since")}
