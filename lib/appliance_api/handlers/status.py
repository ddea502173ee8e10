"""/status (figures for an autoscaling controller) and /service_status (for people)."""
from ..response import Response
from ..health import daemon_table, service_status_lines


def get_status(request):
    config = request.config
    table = daemon_table(config.state_dir)
    counts = {service: 0 for service in ("haproxy", "stunnel")}
    for _instance, states, _state in table:
        for service, pid in states:
            if pid is not None:
                counts[service] += 1
    import json

    from ..system import statistics

    figures = statistics.sample_rates(config)
    from .. import appliance, topology

    stored = topology.load(config.state_dir)
    active = appliance.active_node(config, stored)
    body = {
        "network_tx": figures["network_tx"],
        "network_rx": figures["network_rx"],
        "active_node": active,
        "haproxy_count": str(counts["haproxy"]),
        "stunnel_count": str(counts["stunnel"]),
        "hostname": statistics.hostname(),
        "fencing_daemon_status": appliance.fencing_daemon_status(config, stored),
        "user_cpu": figures["user_cpu"],
        "system_cpu": figures["system_cpu"],
        "software_irq": figures["software_irq"],
        "load": statistics.load(),
        "instance_count": len(table),
        "topology": stored["topology"],
        "role": appliance.role(config, stored, active),
        "topology_status": topology.status(config.state_dir, stored),
        "api_certificate_days_left": _api_certificate_days_left(config),
    }
    if stored["topology"] == "ACTIVE-STANDBY":
        from ..sync_state import status_keys

        body.update(status_keys(config.state_dir))
    return Response(json.dumps(body), content_type="application/json")


def _api_certificate_days_left(config):
    """Whole days the API's own certificate has left (null if unreadable):
    read by a DER walk, not cryptography, to keep /status cheap."""
    import time

    from ..certdates import days_left

    return days_left(config.get("api", "certificate_file"), time.time())


def get_service_status(request):
    lines = service_status_lines(request.config.state_dir)
    return Response("\n".join(lines) + "\n" if lines else "")
