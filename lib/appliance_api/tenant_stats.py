"""What a tenant's haproxy is doing: its frontends, backends and servers, with
the counters kept over the instance's life on this node
(system/haproxy_counters.py), as GET /instances/:instance/stats, /metrics and
`octctl stats` give them.

One view per instance:

    {"id", "haproxy": "running" | "stopped" | "not answering" | "not configured",
     "frontends": [{"name", "status", "current_sessions", "total_sessions",
                    "session_rate", "bytes_in", "bytes_out", "requests_total",
                    "responses_5xx", "denied"}],
     "backends": [{"name", "status", "current_sessions", "total_sessions",
                   "servers": [{"name", "address", "status", "check",
                                "last_change_s", "current_sessions", "total_sessions"}]}]}

Running, the rows are the current worker's and the counters the kept totals;
a key the mode does not count (requests_total in TCP mode) is null. Not
running, the rows are the ledger's and what only a live worker can say
(status, current sessions, rate, address, check) is null.
"""
from .health import running_pid
from .system import haproxy_counters
from .system.haproxy_cli import snapshots

STOPPED, RUNNING, NOT_ANSWERING, NOT_CONFIGURED = (
    "stopped", "running", "not answering", "not configured")
KEPT = haproxy_counters.COUNTED
# A view's counter names for show stat's kept fields.
FRONTEND_COUNTERS = (("total_sessions", "stot"), ("bytes_in", "bin"), ("bytes_out", "bout"),
                     ("requests_total", "req_tot"), ("responses_5xx", "hrsp_5xx"),
                     ("denied", "dreq"))
# The server states haproxy words: UP, DOWN, NOLB, MAINT, DRAIN, "no check",
# some followed by a transition count ("UP 1/3") or a reason ("MAINT (via b/s)").
SERVER_STATES = ("UP", "DOWN", "NOLB", "MAINT", "DRAIN", "no check")


def instance_stats(instance, config):
    """The view of one instance (a layout.Instance that exists)."""
    if "haproxy" not in instance.configured_services():
        return view(instance.id, NOT_CONFIGURED, None, haproxy_counters.record(instance.dir, None))
    running = running_pid(instance, "haproxy") is not None
    snapshot = None
    if running:
        snapshot = snapshots([instance.dir], config.number("stats", "cli_timeout"))[instance.dir]
    return _view_of(instance.id, instance.dir, running, snapshot)


def all_stats(config, table=None):
    """[view] of every instance with a haproxy config, sorted by id; table is
    health.daemon_table's, when the caller has it already."""
    from .health import daemon_table
    from .layout import instances_dir

    base = instances_dir(config.state_dir) + "/"
    table = daemon_table(config.state_dir) if table is None else table
    return many_stats([(instance_id, base + instance_id, dict(states)["haproxy"] is not None)
                       for instance_id, states, _state in table if "haproxy" in dict(states)],
                      config)


def many_stats(folders, config):
    """[view] of many instances, [(id, instance dir, haproxy running)], every
    running haproxy read at once (system/haproxy_cli.ask_many)."""
    read = snapshots([folder for _id, folder, running in folders if running],
                     config.number("stats", "cli_timeout"))
    return [_view_of(instance_id, folder, running, read.get(folder))
            for instance_id, folder, running in folders]


def _view_of(instance_id, folder, running, snapshot):
    totals = haproxy_counters.record(folder, snapshot)
    if snapshot is not None:
        return view(instance_id, RUNNING, snapshot.current_rows, totals)
    return view(instance_id, NOT_ANSWERING if running else STOPPED, None, totals)


def view(instance_id, state, rows, totals):
    """The view from the current worker's rows (None: not running) and the
    ledger's totals {row key: [total per KEPT]}."""
    if rows is None:
        rows = [_row_from_key(key) for key in totals]
    frontends, backends, servers = [], [], {}
    for row in rows:
        kind = row.get("type")
        if kind not in haproxy_counters.KEPT_TYPES:
            continue
        kept = dict(zip(KEPT, totals.get(haproxy_counters.row_key(row), [None] * len(KEPT))))

        def counter(field):
            # haproxy leaves a field empty, or at 0 for HTTP's in TCP mode,
            # where it does not apply.
            if row.get(field, "") == "" or (field in haproxy_counters.HTTP_ONLY and row.get("mode") == "tcp"):
                return None
            return kept[field]

        if kind == "0":
            entry = {"name": row["pxname"], "status": _text(row, "status"),
                     "current_sessions": _number(row, "scur"),
                     "total_sessions": counter("stot"), "session_rate": _number(row, "rate")}
            entry.update((name, counter(field)) for name, field in FRONTEND_COUNTERS[1:])
            frontends.append(entry)
        elif kind == "1":
            backends.append({"name": row["pxname"], "status": _text(row, "status"),
                             "current_sessions": _number(row, "scur"),
                             "total_sessions": counter("stot"),
                             "servers": servers.setdefault(row["pxname"], [])})
        else:
            servers.setdefault(row["pxname"], []).append({
                "name": row["svname"], "address": _text(row, "addr"),
                "status": server_state(row.get("status", "")), "check": check_text(row),
                "last_change_s": _number(row, "lastchg"),
                "current_sessions": _number(row, "scur"), "total_sessions": counter("stot")})
    return {"id": instance_id, "haproxy": state, "frontends": frontends, "backends": backends}


def _row_from_key(key):
    """A row as the ledger knows it: identity only, every counted field "0"
    (so that a kept total shows), every live one absent."""
    kind, proxy, server = key.split("\t")
    row = {"type": kind, "pxname": proxy, "svname": server}
    row.update(dict.fromkeys(KEPT, "0"))
    return row


def server_state(status):
    """haproxy's word for a server's state without its transition count or
    reason ("UP 1/3" is UP, "MAINT (via b/s)" MAINT); None when empty."""
    if status.startswith("no check"):
        return "no check"
    word = status.split(" ")[0].split("(")[0]
    return word or None


def check_text(row):
    """The last health check as haproxy's own page words it, "L7OK/200 in
    1ms"; None for a server without checks. A leading "* " (a check under
    way) is dropped."""
    status = row.get("check_status", "").lstrip("* ")
    if not status:
        return None
    code, duration = row.get("check_code", ""), row.get("check_duration", "")
    return status + ("/" + code if code else "") + (" in %sms" % duration if duration else "")


def _number(row, field):
    try:
        return int(row.get(field, ""))
    except ValueError:
        return None


def _text(row, field):
    return row.get(field) or None


def summary_lines(views):
    """octctl stats: a line per instance, summed over its frontends."""
    rows = [("instance", "haproxy", "sessions", "total", "rate", "bytes in", "bytes out",
             "requests", "5xx", "servers up")]
    for found in views:
        def total(key, entries=found["frontends"]):
            counts = [entry[key] for entry in entries if entry[key] is not None]
            return str(sum(counts)) if counts else "-"

        servers = [server for backend in found["backends"] for server in backend["servers"]]
        up = sum(server["status"] in ("UP", "no check") for server in servers)
        rows.append((found["id"], found["haproxy"], total("current_sessions"),
                     total("total_sessions"), total("session_rate"), total("bytes_in"),
                     total("bytes_out"), total("requests_total"), total("responses_5xx"),
                     "%d/%d" % (up, len(servers))))
    return _columns(rows)


def detail_lines(found):
    """octctl stats INSTANCE: every frontend, backend and server."""
    lines = ["%s  haproxy %s" % (found["id"], found["haproxy"])]
    rows = [("", "name", "status", "sessions", "total", "rate", "bytes in", "bytes out",
             "requests", "5xx", "check")]
    for frontend in found["frontends"]:
        rows.append(("frontend", frontend["name"]) + _cells(frontend, (
            "status", "current_sessions", "total_sessions", "session_rate", "bytes_in",
            "bytes_out", "requests_total", "responses_5xx")) + ("",))
    for backend in found["backends"]:
        rows.append(("backend", backend["name"]) + _cells(backend, (
            "status", "current_sessions", "total_sessions")) + ("",) * 6)
        for server in backend["servers"]:
            rows.append(("  server", "%s %s" % (server["name"], server["address"] or ""))
                        + _cells(server, ("status", "current_sessions", "total_sessions"))
                        + ("",) * 5 + _cells(server, ("check",)))
    return lines + _columns(rows)


def _cells(entry, keys):
    return tuple("-" if entry[key] is None else str(entry[key]) for key in keys)


def _columns(rows):
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in rows]
