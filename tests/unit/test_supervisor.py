"""supervisor.BackOff: when a daemon that keeps exiting may start again."""
from appliance_api.supervisor import BackOff


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
        backoff.exited(now + 0.1)
    assert backoff.delay > 1
    now = backoff.next_start(now)
    backoff.started(now)
    backoff.exited(now + 31)  # ran for longer than the window
    assert backoff.next_start(now + 31) == now + 31 and backoff.delay == 0
    backoff.started(now + 31)
    assert backoff.count == 1


def test_a_long_wait_is_not_a_healthy_run_and_the_delay_stays_at_its_cap():
    """Time spent waiting to start again does not count as running: a
    daemon that dies at once keeps backing off at max_delay, however long."""
    backoff, now, gaps = BackOff(burst=3, window=30, max_delay=60), 0.0, []
    for _ in range(40):
        start = backoff.next_start(now)
        gaps.append(round(start - now, 1))
        now = start
        backoff.started(now)
        now += 0.1
        backoff.exited(now)  # seen gone once...
        backoff.exited(now + 50)  # ...and a later scan must not count the wait as a run
    assert gaps[:8] == [0, 0, 0, 0.9, 1.9, 3.9, 7.9, 15.9]
    assert gaps[-10:] == [59.9] * 10


def test_a_start_clears_the_waiting_mark():
    backoff = BackOff(burst=1, window=30, max_delay=60)
    backoff.started(0.0)
    backoff.waiting = True
    backoff.started(1.0)
    assert not backoff.waiting


def make_supervisor(config, queued, lines):
    from appliance_api.supervisor import Supervisor

    supervisor = Supervisor(config, log=lines.append)
    supervisor._queue = lambda key, now: queued.append(key)
    return supervisor


def test_a_scan_survives_a_missing_state_folder_and_a_folder_where_a_record_belongs(
        tmp_path, instance_id):
    import os

    from appliance_api.layout import Instance
    from conftest import make_config

    config = make_config(str(tmp_path / "not-made-yet"))
    queued, lines = [], []
    make_supervisor(config, queued, lines).scan()  # no state folder at all
    assert queued == []

    config = make_config(str(tmp_path))
    instance = Instance(str(tmp_path), instance_id)
    os.makedirs(instance.stopped_record)  # a folder where stopped.by-operator belongs
    with open(instance.template("haproxy"), "w") as file:
        file.write("global\n")
    make_supervisor(config, queued, lines).scan()
    assert queued == [(instance_id, "haproxy")]  # read as "nothing stopped", and the scan went on
    assert any("found not running" in line for line in lines)


def test_keepalived_is_wanted_only_where_converge_would_run_it(state_dir):
    from appliance_api import topology
    from conftest import make_config

    single = {k: topology.NEVER_CONFIGURED[k] for k in topology.TOPOLOGY_FIELDS}
    pair = dict(single, topology="ACTIVE-STANDBY", ha_ip="192.0.2.100",
                all_ips=["192.0.2.1", "192.0.2.2"], primary_ip="192.0.2.1")
    topology.store(state_dir, dict(pair, status="FAILED", applied=single))
    queued, lines = [], []
    managed = make_config(state_dir, network={"manage": "yes"})
    assert make_supervisor(managed, queued, lines)._keepalived_wanted() is False
    topology.store(state_dir, dict(pair, status="OK"))
    unmanaged = make_config(state_dir)  # [network] manage = no
    assert make_supervisor(unmanaged, queued, lines)._keepalived_wanted() is False
