"""GET /metrics: Prometheus' text exposition format (version 0.0.4) of the
appliance's own figures and every tenant's haproxy.

The appliance: /status's numbers, as gauges (rates and CPU shares since the
last /status sample, which this does not replace, so a controller polling
/status keeps its window), and the raw counters behind them. Each instance:
its haproxy's state (appliance_haproxy_up: answered within [stats]
cli_timeout), the counters kept over its life on this node
(tenant_stats.py, never decreasing) and the live gauges; labels instance,
frontend, backend, server. A tenant whose haproxy does not answer shows
up 0 with its kept counters, and costs the scrape one bounded wait.

Prometheus gives every scraped series its own `instance` label (the target):
scrape with `honor_labels: true`, or the tenant's id arrives as
`exported_instance`.
"""
from .health import daemon_table
from . import tenant_stats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (name, type, help, view key) of each family, per kind of row.
FRONTEND_FAMILIES = [
    ("appliance_frontend_up", "gauge", "1 when the frontend accepts connections (OPEN)", None),
    ("appliance_frontend_current_sessions", "gauge", "Sessions open now", "current_sessions"),
    ("appliance_frontend_session_rate", "gauge", "Sessions per second over the last second",
     "session_rate"),
    ("appliance_frontend_sessions_total", "counter", "Sessions over the instance's life on "
     "this node", "total_sessions"),
    ("appliance_frontend_bytes_in_total", "counter", "Bytes received from clients", "bytes_in"),
    ("appliance_frontend_bytes_out_total", "counter", "Bytes sent to clients", "bytes_out"),
    ("appliance_frontend_http_requests_total", "counter", "HTTP requests (HTTP mode only)",
     "requests_total"),
    ("appliance_frontend_http_responses_5xx_total", "counter",
     "HTTP responses with a 5xx status (HTTP mode only)", "responses_5xx"),
    ("appliance_frontend_requests_denied_total", "counter", "Requests denied by rules",
     "denied"),
]
BACKEND_FAMILIES = [
    ("appliance_backend_up", "gauge", "1 when the backend has a server to send to (UP)", None),
    ("appliance_backend_current_sessions", "gauge", "Sessions open now", "current_sessions"),
    ("appliance_backend_sessions_total", "counter", "Sessions over the instance's life on "
     "this node", "total_sessions"),
]
SERVER_FAMILIES = [
    ("appliance_server_status", "gauge", "1 for the server's state as haproxy words it, "
     "0 for the others", None),
    ("appliance_server_last_change_seconds", "gauge", "Seconds since the server's state "
     "last changed", "last_change_s"),
    ("appliance_server_current_sessions", "gauge", "Sessions open now", "current_sessions"),
    ("appliance_server_sessions_total", "counter", "Sessions over the instance's life on "
     "this node", "total_sessions"),
]


def render(config):
    """The whole exposition, as text."""
    table = daemon_table(config.state_dir)
    views = tenant_stats.all_stats(config, table)
    families = {}  # name: (type, help, [(labels, value)]), in the order first met

    def sample(name, kind, help_text, labels, value):
        if value is not None:
            families.setdefault(name, (kind, help_text, []))[2].append((labels, value))

    for name, kind, help_text, value in appliance_figures(config, table):
        for labels, figure in value:
            sample(name, kind, help_text, labels, figure)
    for found in views:
        instance = (("instance", found["id"]),)
        sample("appliance_haproxy_up", "gauge", "1 when the instance's haproxy answered its "
               "master CLI within [stats] cli_timeout", instance,
               1 if found["haproxy"] == tenant_stats.RUNNING else 0)
        for frontend in found["frontends"]:
            labels = instance + (("frontend", frontend["name"]),)
            for name, kind, help_text, key in FRONTEND_FAMILIES:
                value = frontend[key] if key else _flag(frontend["status"], "OPEN")
                sample(name, kind, help_text, labels, value)
        for backend in found["backends"]:
            labels = instance + (("backend", backend["name"]),)
            for name, kind, help_text, key in BACKEND_FAMILIES:
                value = backend[key] if key else _flag(backend["status"], "UP")
                sample(name, kind, help_text, labels, value)
            for server in backend["servers"]:
                server_labels = labels + (("server", server["name"]),)
                for name, kind, help_text, key in SERVER_FAMILIES:
                    if key:
                        sample(name, kind, help_text, server_labels, server[key])
                    elif server["status"] is not None:
                        for state in tenant_stats.SERVER_STATES:
                            sample(name, kind, help_text, server_labels + (("state", state),),
                                   1 if server["status"] == state else 0)
    lines = []
    for name, (kind, help_text, samples) in families.items():
        lines.append("# HELP %s %s" % (name, _escape_help(help_text)))
        lines.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples:
            lines.append("%s%s %s" % (name, _labels(labels), _value(value)))
    return "\n".join(lines) + "\n"


def appliance_figures(config, table):
    """(name, type, help, [(labels, value)]) of the appliance's own figures:
    /status's numbers, and the counters its rates come from."""
    from .system import statistics

    current = statistics.take_sample(config)
    rates = statistics.rates(current, statistics.stored_sample(config))
    running = {"haproxy": 0, "stunnel": 0}
    for _instance, states, _state in table:
        for service, pid in states:
            running[service] += pid is not None
    load = statistics.load()
    none = ()
    return [
        ("appliance_network_transmit_bytes_per_second", "gauge", "Bytes per second sent on "
         "[status] network_interfaces since the last /status", [(none, rates["network_tx"])]),
        ("appliance_network_receive_bytes_per_second", "gauge", "Bytes per second received "
         "since the last /status", [(none, rates["network_rx"])]),
        ("appliance_network_transmit_bytes_total", "counter", "Bytes sent on [status] "
         "network_interfaces since boot", [(none, current["tx"])]),
        ("appliance_network_receive_bytes_total", "counter", "Bytes received on [status] "
         "network_interfaces since boot", [(none, current["rx"])]),
        ("appliance_cpu_percent", "gauge", "Share of CPU time since the last /status "
         "(/status's user_cpu, system_cpu, software_irq)",
         [((("mode", "user"),), rates["user_cpu"]), ((("mode", "system"),), rates["system_cpu"]),
          ((("mode", "softirq"),), rates["software_irq"])]),
        ("appliance_cpu_seconds_total", "counter", "CPU seconds since boot, all CPUs",
         [((("mode", "user"),), current["user"]), ((("mode", "system"),), current["system"]),
          ((("mode", "softirq"),), current["softirq"])]),
        ("appliance_load", "gauge", "Load average", [((("period", period),), float(figure))
                                                      for period, figure in zip(
                                                          ("1m", "5m", "15m"), load)]),
        ("appliance_instances", "gauge", "Instances on this appliance (/status instance_count)",
         [(none, len(table))]),
        ("appliance_daemons_running", "gauge", "Running daemons (/status haproxy_count, "
         "stunnel_count)", [((("daemon", service),), count)
                            for service, count in running.items()]),
    ]


def _flag(status, word):
    return None if status is None else int(status == word)


def _labels(labels):
    if not labels:
        return ""
    return "{%s}" % ",".join('%s="%s"' % (name, _escape_label(value)) for name, value in labels)


def _escape_label(value):
    # The format's three escapes in a label value: backslash, double quote, line feed.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(value):
    if isinstance(value, float):
        return repr(value)
    return str(value)
