"""running.py: what should run and the one converge to it, with stand-in
daemons (the real ones are driven end to end: tests/e2e/test_supervision.py)."""
import os
import subprocess

import pytest

from appliance_api import running
from appliance_api.layout import Instance
from appliance_api.system.daemon import DaemonFailed
from appliance_api.system.daemons import daemon_for


class StandIn:
    """A daemon that records what was asked of it; `runs` and `fails` are per service."""

    def __init__(self, service, instance, world):
        self.name, self.instance, self.world = service, instance, world
        self.rendered_path = instance.rendered(service)

    def render(self, template):
        return template

    def process(self):
        return object() if self.name in self.world["runs"] else None

    def apply(self, keep_outcome=True):
        self.world["applied"].append(self.name)
        if self.name in self.world["fails"]:
            raise DaemonFailed("refused")
        self.world["runs"].add(self.name)
        return "%s started" % self.name

    def adopt_orphan(self):
        if self.name not in self.world["orphans"]:
            return None
        self.world["runs"].add(self.name)
        return type("Orphan", (), {"pid": 4242})

    def stop(self):
        self.world["runs"].discard(self.name)
        return True

    def killed_message(self):
        return "%s killed." % self.name


@pytest.fixture
def world(monkeypatch, state_dir, instance_id):
    state = {"runs": set(), "fails": set(), "applied": [], "orphans": set()}
    instance = Instance(state_dir, instance_id)
    os.makedirs(instance.dir)
    for service in ("haproxy", "stunnel"):
        with open(instance.template(service), "w") as file:
            file.write("# %s\n" % service)
    monkeypatch.setattr(running, "daemon_for",
                        lambda service, instance, config: StandIn(service, instance, state))
    state["instance"] = instance
    return state


def test_catch_up_runs_only_what_a_killed_change_left_behind(world, config):
    instance = world["instance"]
    with open(instance.reload_pending, "w") as file:
        file.write("stunnel\n")
    outcome = running.catch_up(instance, config)
    assert world["applied"] == ["stunnel"] and outcome.caught_up == ["stunnel"]
    assert running.behind(instance) == set()


def test_converge_starts_every_daemon_that_should_run_and_does_not(world, config):
    world["runs"].add("stunnel")
    outcome = running.converge(world["instance"], config)
    assert world["applied"] == ["haproxy"] and outcome.caught_up == ["haproxy"]


def test_a_stop_on_purpose_wins_until_a_start(world, config):
    instance = world["instance"]
    lines, errors = running.control(instance, ["haproxy"], "stop", config)
    assert not errors and running.stopped_on_purpose(instance) == {"haproxy"}
    assert not running.wanted(instance, "haproxy") and running.wanted(instance, "stunnel")
    running.converge(instance, config)
    assert world["applied"] == ["stunnel"]
    running.control(instance, ["haproxy"], "start", config)
    assert running.stopped_on_purpose(instance) == set()
    assert not os.path.exists(instance.stopped_record)
    assert world["applied"] == ["stunnel", "haproxy"]


def test_a_daemon_that_still_fails_stays_marked_and_says_so(world, config):
    instance = world["instance"]
    with open(instance.reload_pending, "w") as file:
        file.write("haproxy\nstunnel\n")
    world["fails"].add("haproxy")
    outcome = running.catch_up(instance, config)
    assert outcome.failed == ["haproxy"] and outcome.caught_up == ["stunnel"]
    assert "still does not run its stored files: refused" in outcome.failed_lines[0]
    assert running.behind(instance) == {"haproxy"}


def test_a_mark_for_a_config_that_is_gone_is_dropped(world, config):
    instance = world["instance"]
    os.unlink(instance.template("stunnel"))
    with open(instance.reload_pending, "w") as file:
        file.write("stunnel\n")
    running.catch_up(instance, config)
    assert world["applied"] == [] and not os.path.exists(instance.reload_pending)


def test_pending_names_the_services_during_a_change_and_drops_them_after(world):
    instance = world["instance"]
    with running.pending(instance, ["haproxy"]):
        assert running.behind(instance) == {"haproxy"}
    assert running.behind(instance) == set()
    with pytest.raises(RuntimeError):
        with running.pending(instance, ["haproxy"]):
            raise RuntimeError("killed half-way, as far as the record knows")
    assert running.behind(instance) == {"haproxy"}  # left for catch_up


def test_a_new_config_put_killed_half_way_ends_an_operators_stop(world, config):
    """The stop record and a mark both: a config PUT stored files and was
    killed before it ran them. A new config ends a stop: it runs."""
    instance = world["instance"]
    running.stopped_by_operator(instance, "haproxy")
    with open(instance.reload_pending, "w") as file:
        file.write("haproxy\n")
    outcome = running.converge(instance, config)
    assert outcome.caught_up == ["haproxy", "stunnel"]
    assert running.stopped_on_purpose(instance) == set() and running.behind(instance) == set()
def test_converge_adopts_a_daemon_whose_pid_file_is_lost_instead_of_starting_a_second(
        world, config):
    world["orphans"].add("haproxy")
    outcome = running.converge(world["instance"], config)
    assert world["applied"] == ["stunnel"]  # haproxy was adopted, not started
    assert any("haproxy daemon" in line and "adopted (pid 4242)" in line
               for line in outcome.lines)
    assert outcome.caught_up == ["stunnel"]


def test_an_adopted_daemon_behind_its_stored_files_is_reloaded_not_started_twice(
        world, config):
    instance = world["instance"]
    with open(instance.reload_pending, "w") as file:
        file.write("haproxy\n")
    world["orphans"].add("haproxy")
    running.catch_up(instance, config)
    assert world["applied"] == ["haproxy"] and "haproxy" in world["runs"]


@pytest.fixture
def stored_stunnel(state_dir, instance_id, config):
    """An instance with a stunnel config stored and rendered, no daemon yet."""
    instance = Instance(state_dir, instance_id)
    os.makedirs(instance.dir)
    for path in (instance.template("stunnel"), instance.rendered("stunnel")):
        with open(path, "w") as file:
            file.write("[tls]\n")
    return instance


def test_a_daemon_found_by_its_command_line_gets_its_pid_file_back(
        stored_stunnel, config, fake_daemons):
    """The real walk over the processes: a daemon named stunnel running the
    rendered config, whose pid file a person deleted; then one whose pid
    file names a live process of another program (left alone)."""
    instance = stored_stunnel
    orphan = fake_daemons("stunnel", instance.rendered("stunnel"), instance.pid_file("stunnel"))
    os.unlink(instance.pid_file("stunnel"))
    outcome = running.converge(instance, config)
    assert outcome.caught_up == [] and outcome.failed == []
    with open(instance.pid_file("stunnel")) as file:
        assert int(file.read()) == orphan.pid
    other = subprocess.Popen(["sleep", "60"])
    try:
        with open(instance.pid_file("stunnel"), "w") as file:
            file.write("%d\n" % other.pid)
        assert running.converge(instance, config).caught_up == []
        with open(instance.pid_file("stunnel")) as file:
            assert int(file.read()) == orphan.pid
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_no_walk_over_the_processes_for_a_pid_file_from_before_the_machine_started(
        stored_stunnel, config, monkeypatch):
    """At a boot every tenant's pid file is stale: the walk (tens of ms with
    a thousand daemons) would cost seconds."""
    from appliance_api.system import processes

    instance = stored_stunnel
    with open(instance.pid_file("stunnel"), "w") as file:
        file.write("1\n")
    os.utime(instance.pid_file("stunnel"), (processes.machine_started() - 60,) * 2)
    monkeypatch.setattr(processes, "find_by_config", lambda *args: pytest.fail("walked"))
    assert daemon_for("stunnel", instance, config).adopt_orphan() is None


def test_haproxy_is_adopted_only_when_a_master_answers_on_the_instance_socket(
        state_dir, instance_id, config, monkeypatch):
    """A killed master's socket refuses: no walk, and its last worker, still
    serving a few requests, is never taken for the daemon."""
    from appliance_api.system import processes

    instance = Instance(state_dir, instance_id)
    os.makedirs(instance.dir)
    with open(instance.rendered("haproxy"), "w") as file:
        file.write("global\n")
    monkeypatch.setattr(processes, "find_by_config", lambda *args: pytest.fail("walked"))
    assert daemon_for("haproxy", instance, config).adopt_orphan() is None


@pytest.mark.parametrize("stored, marked, stopped, start_dead, actions", [
    ({"haproxy", "stunnel"}, set(), set(), True, {"haproxy": "ensure", "stunnel": "ensure"}),
    ({"haproxy", "stunnel"}, set(), set(), False, {}),                 # catch_up: marks only
    ({"haproxy"}, {"stunnel"}, set(), False, {"stunnel": "forget"}),   # config gone
    ({"haproxy", "stunnel"}, {"haproxy"}, set(), False, {"haproxy": "run"}),
    ({"haproxy", "stunnel"}, set(), {"haproxy"}, True, {"stunnel": "ensure"}),  # a stop wins
    ({"haproxy"}, {"haproxy"}, {"haproxy"}, True, {"haproxy": "run"}),  # but not a new config
])
def test_the_plan_is_decided_from_the_records_alone(stored, marked, stopped, start_dead, actions):
    assert running.plan(stored, marked, stopped, start_dead) == actions
