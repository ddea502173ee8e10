"""The never-decreasing counters (system/haproxy_counters.py) and haproxy's
answers they read (system/haproxy_cli.py): the socket reads faked by
snapshots built from show stat CSV, as haproxy 2.6.12 prints it."""
import json
import os
import socket
import sys
import threading
import time

import pytest

from appliance_api.system import haproxy_cli, haproxy_counters
from appliance_api.system.haproxy_cli import MasterState, Snapshot, parse_stat

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from support.haproxy_answers import (backend, csv_text, frontend, proc_text,  # noqa: E402
                                     server, snapshot)

def sessions(totals, key="0\tweb\tFRONTEND"):
    return totals[key][haproxy_counters.COUNTED.index("stot")]


@pytest.fixture
def folder(tmp_path):
    return str(tmp_path)


def test_a_snapshot_parses_show_proc_and_show_stat_from_one_answer():
    found = snapshot(4242, [frontend(stot=5), server(), backend()])
    assert found.current_worker == 4242 and found.state.old_workers == []
    assert [(r["pxname"], r["svname"]) for r in found.current_rows] == [
        ("web", "FRONTEND"), ("pool", "m1"), ("pool", "BACKEND")]
    assert found.current_rows[0]["stot"] == "5"


def test_show_proc_lists_old_workers_apart_from_the_current_one():
    state = MasterState.parse(proc_text(7, [5, 6]))
    assert (state.reloads, state.failed, state.workers, state.old_workers) == (2, 0, [7], [5, 6])


def test_a_field_holding_a_comma_is_read_whole():
    rows = parse_stat(csv_text(server(check_desc="Layer7 wrong status, code 503")))
    assert rows[0]["check_desc"] == "Layer7 wrong status, code 503"
    assert rows[0]["addr"] == "10.0.0.11:80"


def test_an_answer_without_show_stat_is_no_snapshot():
    assert Snapshot.parse(proc_text(7)) is None
    assert Snapshot.parse("Unknown command\n") is None


def test_tcp_mode_counts_no_http_requests_even_when_haproxy_shows_zero():
    counts = haproxy_counters.counted(parse_stat(csv_text(frontend(
        mode="tcp", stot=3, req_tot="0"), frontend("web2", stot=1, req_tot=9))))
    assert counts["0\tweb\tFRONTEND"][3:5] == [None, None]
    assert counts["0\tweb2\tFRONTEND"][3] == 9


def test_totals_follow_one_worker_and_are_written(folder):
    totals = haproxy_counters.record(folder, snapshot(10, [frontend(stot=5)]))
    assert sessions(totals) == 5
    totals = haproxy_counters.record(folder, snapshot(10, [frontend(stot=8)]))
    assert sessions(totals) == 8
    assert sessions(haproxy_counters.record(folder, None)) == 8  # stopped: kept
    stored = json.load(open(os.path.join(folder, "haproxy.counters")))
    assert list(stored["workers"]) == ["10"]


def test_a_reload_adds_the_new_worker_to_what_the_old_one_counted(folder):
    haproxy_counters.record(folder, snapshot(10, [frontend(stot=100, bytes_in=1000)]))
    # Reloaded: 11 is current, 10 drains and served 5 more since the last read.
    totals = haproxy_counters.record(folder, snapshot(
        11, [frontend(stot=2, bytes_in=20)], old={10: [frontend(stot=105, bytes_in=1050)]}))
    assert sessions(totals) == 107
    assert totals["0\tweb\tFRONTEND"][1] == 1070
    # 10 has finished: show proc no longer lists it; its last counts stay in.
    totals = haproxy_counters.record(folder, snapshot(11, [frontend(stot=4, bytes_in=40)]))
    assert sessions(totals) == 109


def test_an_old_worker_that_does_not_answer_keeps_its_last_counts(folder):
    haproxy_counters.record(folder, snapshot(10, [frontend(stot=100)]))
    totals = haproxy_counters.record(folder, snapshot(11, [frontend(stot=1)], old={10: None}))
    assert sessions(totals) == 101


def test_a_crash_and_restart_loses_only_what_was_served_since_the_last_read(folder):
    haproxy_counters.record(folder, snapshot(10, [frontend(stot=50)]))
    # Killed: the master does not answer, the counts stay.
    assert sessions(haproxy_counters.record(folder, None)) == 50
    # Restarted: a new master and worker at zero, 10 is nowhere.
    totals = haproxy_counters.record(folder, snapshot(20, [frontend(stot=3)]))
    assert sessions(totals) == 53
    assert sessions(haproxy_counters.record(folder, snapshot(20, [frontend(stot=4)]))) == 54


def test_a_counter_reset_inside_a_worker_does_not_lower_the_total(folder):
    haproxy_counters.record(folder, snapshot(10, [frontend(stot=40, bytes_in=400)]))
    totals = haproxy_counters.record(folder, snapshot(10, [frontend(stot=2, bytes_in=500)]))
    # stot went back (clear counters): 40 go into the base; bytes_in only grew.
    assert sessions(totals) == 42
    assert totals["0\tweb\tFRONTEND"][1] == 500


def test_totals_never_decrease_across_a_mixed_history(folder):
    history = [snapshot(10, [frontend(stot=5), server(stot=5), backend(stot=5)]),
               snapshot(10, [frontend(stot=9), server(stot=9), backend(stot=9)]),
               snapshot(11, [frontend(stot=0)], old={10: [frontend(stot=12)]}),
               None,
               snapshot(11, [frontend(stot=1), server(stot=1), backend(stot=1)]),
               snapshot(30, [frontend(stot=0), server(stot=0), backend(stot=0)]),
               snapshot(30, [frontend(stot=0), server(stot=0), backend(stot=0)])]
    last = None
    for step in history:
        totals = haproxy_counters.record(folder, step)
        if last is not None:
            for key, values in last.items():
                for before, now in zip(values, totals[key]):
                    assert before is None or now >= before, (key, last, totals)
        last = totals
    assert sessions(last) == 13 and sessions(last, "2\tpool\tm1") == 10


def test_a_server_named_like_a_proxy_row_is_kept_apart(folder):
    totals = haproxy_counters.record(folder, snapshot(10, [
        server("pool", "BACKEND", stot=3), backend("pool", stot=4)]))
    assert sessions(totals, "2\tpool\tBACKEND") == 3 and sessions(totals, "1\tpool\tBACKEND") == 4


def test_an_unreadable_ledger_starts_again(folder):
    with open(os.path.join(folder, "haproxy.counters"), "w") as file:
        file.write("{not json")
    assert sessions(haproxy_counters.record(folder, snapshot(10, [frontend(stot=1)]))) == 1


def test_an_idle_tenant_costs_no_write(folder):
    haproxy_counters.record(folder, snapshot(10, [frontend(stot=1)]))
    path = os.path.join(folder, "haproxy.counters")
    before = os.stat(path).st_ino
    haproxy_counters.record(folder, snapshot(10, [frontend(stot=1)]))
    assert os.stat(path).st_ino == before


def test_keep_reads_the_socket_and_swallows_a_silent_one(folder, monkeypatch):
    answers = {folder: proc_text(10) + csv_text(frontend(stot=6))}
    monkeypatch.setattr(haproxy_cli, "ask_many", lambda requests, timeout: {
        key: answers.get(key) for key in requests})
    haproxy_counters.keep(folder, 0.1)
    assert sessions(haproxy_counters.record(folder, None)) == 6
    answers.clear()
    haproxy_counters.keep(folder, 0.1)  # no answer: the counts stay
    assert sessions(haproxy_counters.record(folder, None)) == 6


def test_many_sockets_are_read_at_once_and_a_silent_one_costs_one_bounded_wait(tmp_path):
    """Real unix sockets named master.sock: two answer, one accepts and never
    answers (a SIGSTOPped master), one folder has no socket."""
    folders = [str(tmp_path / name) for name in ("quick", "also-quick", "silent", "absent")]
    listeners = []
    for folder in folders[:3]:
        os.makedirs(folder)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.path.join(folder, "master.sock"))
        listener.listen(8)
        listeners.append(listener)
    os.makedirs(folders[3])

    def answer(listener, text):
        connection, _ = listener.accept()
        with connection:
            request = connection.makefile("rb").readline()
            connection.sendall(text + request)

    threads = [threading.Thread(target=answer, args=(listener, text), daemon=True)
               for listener, text in zip(listeners[:2], (b"one:", b"two:"))]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    answers = haproxy_cli.ask_many({folder: (folder, "show proc") for folder in folders}, 0.5)
    elapsed = time.monotonic() - started
    assert answers == {folders[0]: "one:show proc\n", folders[1]: "two:show proc\n",
                       folders[2]: None, folders[3]: None}
    assert 0.5 <= elapsed < 1.5
    for listener in listeners:
        listener.close()
