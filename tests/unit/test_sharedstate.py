"""sharedstate.plan_shared: what converge does with the shared state, decided
from the stored topology alone (carried out as root, end to end)."""
from appliance_api.sharedstate import plan_shared
from appliance_api.topology import NEVER_CONFIGURED, TOPOLOGY_FIELDS, TRANSITION

PAIR = dict(NEVER_CONFIGURED, topology="ACTIVE-STANDBY", ha_ip="192.0.2.100",
            primary_ip="192.0.2.1", all_ips=["192.0.2.1", "192.0.2.2"], secret="s3cret")


def stored(status, topology, applied=None):
    record = dict(topology, status=status)
    if applied is not None:
        record["applied"] = applied
    return record


def test_a_single_node_puts_the_addresses_on_the_interface_itself():
    mode, target = plan_shared(stored("OK", NEVER_CONFIGURED), transition_running=False)
    assert mode == "single" and target["topology"] == "SINGLE"


def test_a_pair_leaves_the_addresses_to_keepalived():
    mode, target = plan_shared(stored("OK", PAIR), transition_running=False)
    assert mode == "pair" and target["ha_ip"] == "192.0.2.100"


def test_while_a_transition_runs_only_the_accounting_is_touched():
    assert plan_shared(stored(TRANSITION, PAIR), transition_running=True) == ("accounting", None)
    # A transition whose worker died is no transition: the last carried out counts.
    mode, _target = plan_shared(stored(TRANSITION, PAIR,
                                       {k: NEVER_CONFIGURED[k] for k in TOPOLOGY_FIELDS}),
                                transition_running=False)
    assert mode == "single"


def test_a_failed_topology_is_never_carried_out():
    single = {k: NEVER_CONFIGURED[k] for k in TOPOLOGY_FIELDS}
    mode, target = plan_shared(stored("FAILED", PAIR, applied=single), transition_running=False)
    assert mode == "single" and target["topology"] == "SINGLE"
    mode, target = plan_shared(stored("FAILED", NEVER_CONFIGURED, applied=dict(PAIR)),
                               transition_running=False)
    assert mode == "pair"
