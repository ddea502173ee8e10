"""/topology: this appliance's place in its cluster (ha-and-listeners.md)."""
import json

from ..response import Response, text
from ..errors import ClusterTransition


def get_topology(request):
    import socket

    from .. import appliance, topology

    stored = topology.load(request.config.state_dir)
    body = {
        "hostname": socket.gethostname(),
        "topology": stored["topology"],
        "role": appliance.role(request.config, stored),
        "primary_ip": stored["primary_ip"],
        "ha_ip": stored["ha_ip"],
        "all_ips": stored["all_ips"],
        "routing-mode": stored["routing-mode"],
        "topology_status": topology.status(request.config.state_dir, stored),
    }
    return Response(json.dumps(body), content_type="application/json")


def post_topology(request):
    """Validate (the form, then `keepalived -t` on the configuration a pair
    would run: a pair that cannot form is a 409, before anything is stored),
    store with topology_status TOPOLOGY-CHANGE and the last topology carried
    out ("applied", what a failure goes back to), and start the worker that
    carries the change out; it inherits topology.lock, so the transition
    counts as running from this moment until the worker ends."""
    import os

    from .. import appliance, topology
    from ..system.signals import terminate_after_change
    from ..transition import check_pair, start_worker

    body = request.read_body(int(request.config.number("limits", "config_bytes")))
    lock = topology.take_transition_lock(request.config.state_dir)
    if lock is None:
        raise ClusterTransition()
    try:
        wanted = topology.parse_form(body, appliance.own_addresses(request.config))
        if wanted["topology"] == "ACTIVE-STANDBY":
            check_pair(request.config, wanted)
        applied = topology.carried_out(topology.load(request.config.state_dir))
        wanted.update(status=topology.TRANSITION, reason="", applied=applied)
        with terminate_after_change():  # a stored change gets its worker
            topology.store(request.config.state_dir, wanted)
            start_worker(request.config, lock)
    finally:
        os.close(lock)
    return text("OK")
