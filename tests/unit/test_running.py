"""running.py: what should run and the one converge to it, with stand-in
daemons (the real ones are driven end to end: tests/e2e/test_supervision.py)."""
import os

import pytest

from appliance_api import running
from appliance_api.layout import Instance
from appliance_api.system.daemon import DaemonFailed


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

    def stop(self):
        self.world["runs"].discard(self.name)
        return True

    def killed_message(self):
        return "%s killed." % self.name


@pytest.fixture
def world(monkeypatch, state_dir, instance_id):
    state = {"runs": set(), "fails": set(), "applied": []}
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
