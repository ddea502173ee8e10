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
