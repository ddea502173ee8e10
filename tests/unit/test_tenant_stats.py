"""The stats views (tenant_stats.py), /metrics (metrics.py) and the two
endpoints in process: haproxy's master CLI faked by its answers
(tests/support/haproxy_answers.py), the running daemons by fake_daemons."""
import json
import os
import sys

import pytest

from appliance_api import metrics, tenant_stats
from appliance_api.layout import Instance
from appliance_api.system import haproxy_cli, haproxy_counters

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from support.haproxy_answers import (backend, csv_text, frontend, proc_text,  # noqa: E402
                                     server, snapshot)
from support import prometheus_text  # noqa: E402

A = "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c"
B = "0b4d6ad1-8f0a-4f43-9c39-7b1b3e0b7a11"


def rows_of_the_issue():
    return [frontend(stot=1200, bytes_in=81234, bytes_out=912345, req_tot=1400, hrsp_5xx=2,
                     scur="3", rate="12"),
            frontend("raw", mode="tcp", stot=4),
            server(stot=600, scur="2", lastchg="3600", status="UP 1/3"),
            server(name="m2", status="DOWN", addr="10.0.0.12:80", check_status="L4CON",
                   check_code="", check_duration="0"),
            server(name="m3", status="no check", check_status="", check_code="",
                   check_duration=""),
            backend(stot=1190, scur="3")]


def test_a_running_view_has_the_issues_shape(tmp_path):
    folder = str(tmp_path)
    found = snapshot(10, rows_of_the_issue())
    view = tenant_stats.view(A, "running", found.current_rows,
                             haproxy_counters.record(folder, found))
    assert view["frontends"][0] == {
        "name": "web", "status": "OPEN", "current_sessions": 3, "total_sessions": 1200,
        "session_rate": 12, "bytes_in": 81234, "bytes_out": 912345, "requests_total": 1400,
        "responses_5xx": 2, "denied": 0}
    assert view["frontends"][1]["requests_total"] is None  # TCP mode
    assert view["frontends"][1]["responses_5xx"] is None
    pool = view["backends"][0]
    assert {k: v for k, v in pool.items() if k != "servers"} == {
        "name": "pool", "status": "UP", "current_sessions": 3, "total_sessions": 1190}
    assert pool["servers"][0] == {"name": "m1", "address": "10.0.0.11:80", "status": "UP",
                                  "check": "L7OK/200 in 1ms", "last_change_s": 3600,
                                  "current_sessions": 2, "total_sessions": 600}
    assert [(s["status"], s["check"]) for s in pool["servers"][1:]] == [
        ("DOWN", "L4CON in 0ms"), ("no check", None)]


def test_a_stopped_view_keeps_the_counters_and_nulls_what_only_a_worker_knows(tmp_path):
    folder = str(tmp_path)
    haproxy_counters.record(folder, snapshot(10, rows_of_the_issue()))
    view = tenant_stats.view(A, "stopped", None, haproxy_counters.record(folder, None))
    web = next(f for f in view["frontends"] if f["name"] == "web")
    assert (web["total_sessions"], web["bytes_out"], web["status"], web["current_sessions"]) \
        == (1200, 912345, None, None)
    raw = next(f for f in view["frontends"] if f["name"] == "raw")
    assert raw["requests_total"] is None
    servers = view["backends"][0]["servers"]
    assert [(s["name"], s["total_sessions"], s["status"], s["address"]) for s in servers] == [
        ("m1", 600, None, None), ("m2", 0, None, None), ("m3", 0, None, None)]


@pytest.mark.parametrize("word, state", [
    ("UP", "UP"), ("UP 1/3", "UP"), ("DOWN 2/2", "DOWN"), ("MAINT (via pool/m1)", "MAINT"),
    ("MAINT (resolution)", "MAINT"), ("DRAIN (agent)", "DRAIN"), ("NOLB", "NOLB"),
    ("no check", "no check"), ("", None)])
def test_server_states_drop_transition_counts_and_reasons(word, state):
    assert tenant_stats.server_state(word) == state


def test_check_text_drops_the_in_progress_mark():
    assert tenant_stats.check_text({"check_status": "* L7OK", "check_code": "200",
                                    "check_duration": "3"}) == "L7OK/200 in 3ms"


def make_instance(state_dir, instance_id, fake_daemons=None):
    instance = Instance(state_dir, instance_id)
    os.makedirs(instance.dir)
    for name in ("haproxy.cfg", "haproxy.rendered.cfg"):
        with open(os.path.join(instance.dir, name), "w") as file:
            file.write("# %s\n" % name)
    if fake_daemons is not None:
        fake_daemons("haproxy", instance.rendered("haproxy"), instance.pid_file("haproxy"))
    return instance


@pytest.fixture
def master_cli(monkeypatch):
    """{instance dir: answer} the fake master CLIs give (absent: silent)."""
    answers = {}
    monkeypatch.setattr(haproxy_cli, "ask_many", lambda requests, timeout: {
        key: answers.get(key) for key in requests})
    return answers


def test_stats_of_a_running_haproxy_in_process(app, state_dir, fake_daemons, master_cli):
    instance = make_instance(state_dir, A, fake_daemons)

    def web_sessions():
        body = app.get("/instances/%s/stats" % A).json
        return body["haproxy"], next(f["total_sessions"] for f in body["frontends"]
                                     if f["name"] == "web")

    master_cli[instance.dir] = proc_text(10) + csv_text(*rows_of_the_issue())
    assert web_sessions() == ("running", 1200)
    master_cli.clear()  # killed -9: silent, and the counts stay
    assert web_sessions() == ("not answering", 1200)
    master_cli[instance.dir] = proc_text(20) + csv_text(frontend(stot=5))  # again, at zero
    assert web_sessions() == ("running", 1205)


def test_stats_states_and_404(app, state_dir, fake_daemons, master_cli):
    make_instance(state_dir, A)  # configured, not running
    assert app.get("/instances/%s/stats" % A).json == {
        "id": A, "haproxy": "stopped", "frontends": [], "backends": []}
    make_instance(state_dir, B, fake_daemons)  # running, silent
    assert app.get("/instances/%s/stats" % B).json["haproxy"] == "not answering"
    missing = "11111111-2222-4333-8444-555555555555"
    assert app.get("/instances/%s/stats" % missing, status=404).text == "Not Found\n"
    app.put("/instances/%s/stats" % A, b"x", status=403)


def test_metrics_parse_and_carry_every_instance(app, state_dir, fake_daemons, master_cli):
    running = make_instance(state_dir, A, fake_daemons)
    make_instance(state_dir, B, fake_daemons)  # silent: reported down
    master_cli[running.dir] = proc_text(10) + csv_text(*rows_of_the_issue())
    response = app.get("/metrics")
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = prometheus_text.parse(response.text)
    up = {s[0]["instance"]: s[1] for s in families["appliance_haproxy_up"].samples}
    assert up == {A: 1, B: 0}
    assert ({"instance": A, "frontend": "web"}, 1200) in \
        families["appliance_frontend_sessions_total"].samples
    status = {(s[0]["server"], s[0]["state"]): s[1]
              for s in families["appliance_server_status"].samples}
    assert status[("m1", "UP")] == 1 and status[("m1", "DOWN")] == 0
    assert status[("m2", "DOWN")] == 1 and status[("m3", "no check")] == 1
    requests = families["appliance_frontend_http_requests_total"].samples
    assert [s[0]["frontend"] for s in requests] == ["web"]  # not the TCP frontend
    for name, family in families.items():
        assert family.help, name
        assert (family.type == "counter") == name.endswith("_total"), name
    assert families["appliance_instances"].samples == [({}, 2)]
    for sample_labels, _value in families["appliance_frontend_bytes_in_total"].samples:
        assert set(sample_labels) == {"instance", "frontend"}


def test_metrics_does_not_move_the_status_sample(app, state_dir):
    app.get("/status")
    path = os.path.join(state_dir, "status-sample.json")
    before = open(path).read()
    app.get("/metrics")
    assert open(path).read() == before


def test_label_values_are_escaped_as_the_format_says():
    line = metrics._labels((("instance", A), ("server", 'a "b" \\ c\nd')))
    assert line == '{instance="%s",server="a \\"b\\" \\\\ c\\nd"}' % A
    text = "# HELP x y\n# TYPE x gauge\nx%s 1\n" % line
    assert prometheus_text.parse(text)["x"].samples[0][0]["server"] == 'a "b" \\ c\nd'


@pytest.mark.parametrize("text", [
    "x 1\n",                                   # no TYPE
    "# TYPE x gauge\nx{a=\"b\\t\"} 1\n",         # an escape the format lacks
    "# TYPE x gauge\nx 1\nx 2\n",              # a series twice
    "# TYPE x counter\nx -1\n",                # a counter below zero
    "# TYPE x gauge\nx 1",                     # no final line feed
])
def test_the_strict_parser_refuses_what_the_format_does_not_allow(text):
    with pytest.raises(prometheus_text.FormatError):
        prometheus_text.parse(text)


def test_json_of_views_is_what_the_client_reads(tmp_path):
    view = tenant_stats.view(A, "stopped", None, {})
    assert json.loads(json.dumps(view)) == {"id": A, "haproxy": "stopped", "frontends": [],
                                            "backends": []}
