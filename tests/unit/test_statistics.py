"""/status rates: computed against the stored sample, never by sleeping."""
import json
import os

import pytest

from appliance_api.system import statistics


def sample(time, tx=0, rx=0, user=0.0, system=0.0, softirq=0.0, total=0.0):
    return {"time": time, "tx": tx, "rx": rx, "user": user, "system": system,
            "softirq": softirq, "cpu_total": total}


def test_rates_between_two_samples():
    previous = sample(100.0, tx=1000, rx=5000, user=10, system=5, softirq=1, total=100)
    current = sample(102.0, tx=3000, rx=9000, user=16, system=7, softirq=2, total=120)
    assert statistics.rates(current, previous) == {
        "network_tx": 1000.0, "network_rx": 2000.0,
        "user_cpu": 30.0, "system_cpu": 10.0, "software_irq": 5.0}


@pytest.mark.parametrize("previous", [
    None,
    {"garbage": 1},
    sample(200.0),                           # from before a reboot: time went backwards
    sample(50.0, tx=10**12),                 # a counter went backwards: interface re-created
])
def test_rates_fall_back_to_since_boot(previous):
    current = sample(100.0, tx=5000, rx=2500, user=30, system=10, softirq=5, total=200)
    assert statistics.rates(current, previous) == {
        "network_tx": 50.0, "network_rx": 25.0,
        "user_cpu": 15.0, "system_cpu": 5.0, "software_irq": 2.5}


def test_sample_rates_uses_and_replaces_the_stored_sample(config, monkeypatch):
    path = os.path.join(config.state_dir, "status-sample.json")
    with open(path, "w") as file:
        json.dump(sample(10.0, tx=100, rx=100, user=1, system=1, softirq=0, total=10), file)
    monkeypatch.setattr(statistics, "take_sample", lambda config: sample(
        20.0, tx=1100, rx=600, user=3, system=2, softirq=1, total=20))
    assert statistics.sample_rates(config) == {
        "network_tx": 100.0, "network_rx": 50.0,
        "user_cpu": 20.0, "system_cpu": 10.0, "software_irq": 10.0}
    with open(path) as file:
        assert json.load(file)["time"] == 20.0


def test_real_sample_has_counters_and_a_boot_clock(config):
    current = statistics.take_sample(config)
    assert set(current) == {"time", "tx", "rx", "user", "system", "softirq", "cpu_total"}
    assert current["time"] > 0 and current["cpu_total"] > 0


def test_status_still_answers_with_a_read_only_state_folder(app, config, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(statistics.files, "write_atomic", refuse)
    assert app.get("/status").status_int == 200


def fake_proc(tmp_path, stat, net_dev):
    (tmp_path / "net").mkdir()
    (tmp_path / "stat").write_text(stat)
    (tmp_path / "net" / "dev").write_text(net_dev)
    return str(tmp_path)


NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    9000      10    0    0    0     0          0         0     9000      10    0    0    0     0       0          0
  eth0: 1000000    2000    0    0    0     0          0         0   300000     900    0    0    0     0       0          0
  eth1:     500       5    0    0    0     0          0         0      700       7    0    0    0     0       0          0
"""


def test_sample_read_from_proc_files(tmp_path):
    from conftest import make_config

    ticks = os.sysconf("SC_CLK_TCK")
    proc = fake_proc(tmp_path, "cpu  %d %d %d %d %d %d %d %d 400 0\ncpu0 1 2 3 4 5 6 7 8\n" % tuple(
        ticks * n for n in (10, 2, 5, 100, 3, 1, 4, 0)), NET_DEV)
    config = make_config(str(tmp_path), status={"network_interfaces": "eth0 eth9"})
    current = statistics.take_sample(config, proc)
    assert (current["tx"], current["rx"]) == (300000, 1000000)  # eth9: absent, counts 0
    assert (current["user"], current["system"], current["softirq"]) == (12.0, 5.0, 4.0)
    assert current["cpu_total"] == 125.0  # guest (400 ticks) is inside user already
    every = make_config(str(tmp_path), status={"network_interfaces": "all"})
    assert statistics.take_sample(every, proc)["tx"] == 300700  # all but lo


def test_proc_readers_agree_with_psutil():
    import psutil

    for name, (received, sent) in statistics.network_counters().items():
        psutil_counters = psutil.net_io_counters(pernic=True)[name]
        assert psutil_counters.bytes_recv >= received and psutil_counters.bytes_sent >= sent
    user, nice, system = statistics.cpu_seconds()[:3]
    times = psutil.cpu_times()
    assert abs(times.user - user) < 5 and abs(times.system - system) < 5


def test_the_sample_is_replaced_without_fsync(config, monkeypatch):
    """/status keeps its rate sample on every call: no fsync of the file or the folder."""
    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    statistics.sample_rates(config)
    assert calls == []
    assert os.path.exists(os.path.join(config.state_dir, "status-sample.json"))
