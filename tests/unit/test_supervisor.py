"""supervisor.BackOff (when a daemon that keeps exiting may start again) and
commands.in_scope (the systemd scope a daemon starts in), without root."""
from appliance_api.supervisor import BackOff
from appliance_api.system import commands


def test_a_burst_of_starts_is_free_then_each_wait_doubles_up_to_the_cap():
    backoff, now, waits = BackOff(burst=3, window=30, max_delay=8), 1000.0, []
    for _ in range(7):
        start = backoff.next_start(now)
        waits.append(round(start - now, 6))
        now = start
        backoff.started(now)
        now += 0.1  # it dies at once
    assert waits == [0, 0, 0, 0.9, 1.9, 3.9, 7.9]


def test_a_daemon_that_ran_a_whole_window_starts_afresh():
    backoff, now = BackOff(burst=2, window=30, max_delay=60), 0.0
    for _ in range(4):
        now = backoff.next_start(now)
        backoff.started(now)
    assert backoff.delay > 1
    now += 31  # ran for longer than the window
    assert backoff.next_start(now) == now
    backoff.started(now)
    assert backoff.delay == 0 and len(backoff.starts) == 1


def test_a_start_clears_the_waiting_mark():
    backoff = BackOff(burst=1, window=30, max_delay=60)
    backoff.started(0.0)
    backoff.waiting = True
    backoff.started(1.0)
    assert not backoff.waiting


def test_without_systemd_a_daemon_starts_as_it_is(monkeypatch):
    monkeypatch.setattr(commands, "systemd_is_init", lambda: False)
    argv = ["/usr/sbin/haproxy", "-f", "x.cfg"]
    assert commands.in_scope(argv, "appliance-haproxy-x") is argv


def test_under_systemd_a_daemon_starts_in_a_scope_of_its_own(monkeypatch):
    monkeypatch.setattr(commands, "systemd_is_init", lambda: True)
    argv = commands.in_scope(["/usr/sbin/haproxy", "-f", "x.cfg"], "appliance-haproxy-x")
    assert argv[:3] == [commands.SYSTEMD_RUN, "--scope", "--quiet"]
    assert "--slice=appliance-tenants.slice" in argv
    unit = next(word for word in argv if word.startswith("--unit="))[len("--unit="):]
    assert unit.startswith("appliance-haproxy-x-") and unit.endswith(".scope")
    assert argv[argv.index("--") + 1:] == ["/usr/sbin/haproxy", "-f", "x.cfg"]
    assert commands.in_scope(["true"], None) == ["true"]  # no scope asked: none
