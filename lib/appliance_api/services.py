"""What a change to an instance does to its daemons, addresses and files,
and how it is undone when a step fails.

Callers hold the instance's lock (system.locks.instance_lock). What each
daemon should run, and the records of where it may not, are running.py's. The rule for
every change: the stored files and the running daemons end as they were
before the request, or as the request asked; never in between.
"""
import os

from . import sharedstate
from .running import caught_up, catch_up, pending, render_from_template, started_by_operator
from .errors import Conflict, ServerError
from .layout import SERVICES
from .system import files
from .system.daemons import DaemonFailed, daemon_for
from .system.locks import appliance_lock


def put_config(instance, service, template, config):
    """Check, store and run a new config template; the answer's lines after OK.

    Shared state: the listeners are claimed (checked against every other
    stored config, and the template stored) in one short section under the
    appliance lock, with the service IPs of the old and the new config both
    on the interface; once the daemon runs the new config, a second short
    section converges them to what is stored. On failure the old files are
    put back and the network converged to them."""
    lines = catch_up(instance, config).lines
    daemon = daemon_for(service, instance, config)
    try:
        text = template.decode("utf-8")
    except UnicodeDecodeError:
        raise Conflict("Invalid configuration", "The configuration is not UTF-8 text")
    rendered = daemon.render(text).encode("utf-8")
    template_path, rendered_path = instance.template(service), instance.rendered(service)
    # The confinement rules first: no daemon may read a config before they
    # judge it safe (haproxy -c runs Lua and opens files while it parses).
    scan = sharedstate.scan_template(instance, service, text, config)
    scan.check(config.state_dir)
    sharedstate.refuse_cluster_addresses(scan, config)

    # A dot-name ending .tmp: swept up like any temporary if this request dies.
    candidate = os.path.join(instance.dir, ".%s.candidate.tmp" % service)
    files.write_atomic(candidate, rendered)
    try:
        ok, output = daemon.check(candidate)
    finally:
        files.remove(candidate)
    if not ok:
        raise Conflict("Invalid configuration", output.replace(candidate, template_path))
    if output.strip():
        lines.append(output.strip())

    old_template, old_rendered = files.read(template_path), files.read(rendered_path)
    was_running = daemon.process() is not None
    with pending(instance, [service]):
        with appliance_lock(config.state_dir):
            view = sharedstate.ApplianceView(config)
            view.refuse_shared_listeners(instance, service, scan)
            old_scan = view.scans.get((instance.id, service))
            network = sharedstate.Network(config)
            # Rendered first, template last: the template is the claim others see.
            files.write_atomic(rendered_path, rendered)
            files.write_atomic(template_path, template)
            try:
                # Old and new: no gap for either.
                sharedstate.converge_locked(config, network, view.service_ips(scan))
            except BaseException:
                files.restore(template_path, old_template)
                files.restore(rendered_path, old_rendered)
                raise
        try:
            lines.append(daemon.apply())
            caught_up(instance, service)
            started_by_operator(instance, service)  # a new config runs, whoever stopped the old
        except BaseException as error:
            with appliance_lock(config.state_dir):
                files.restore(template_path, old_template)
                files.restore(rendered_path, old_rendered)
            try:
                _bring_back(daemon, was_running)
            finally:
                sharedstate.converge(config)  # the new config's addresses go, whatever came back
            if isinstance(error, DaemonFailed):
                raise Conflict("Invalid configuration", "%s\n%s" % (error, error.output))
            raise
    if old_scan is not None:
        sharedstate.converge(config)  # the old config's addresses, if it had others
    return lines


def delete_config(instance, service, config):
    caught_up(instance, service)  # about to stop: nothing to run first
    catch_up(instance, config)  # the other daemon, left behind by a killed change
    daemon = daemon_for(service, instance, config)
    stopped = daemon.stop()
    with appliance_lock(config.state_dir):
        for path in (instance.template(service), instance.rendered(service)):
            files.remove(path)
    started_by_operator(instance, service)  # nothing is left to keep stopped
    sharedstate.converge(config)
    return daemon.killed_message() if stopped else "%s daemon %s was not running." % (
        service, instance.id)


def delete_instance(instance, config):
    """Stop every daemon (stunnel in front first), remove files, drop unused addresses."""
    lines = []
    for service in reversed(SERVICES):
        daemon = daemon_for(service, instance, config)
        if daemon.stop():
            lines.append(daemon.killed_message())
    with appliance_lock(config.state_dir):
        for service in SERVICES:
            files.remove(instance.template(service))
            files.remove(instance.rendered(service))
    files.remove(instance.custom503)
    files.remove(instance.counters)  # a new instance of the same id counts from zero
    for name in instance.certificate_names():
        files.remove(instance.certificate(name))
    for name in instance.crt_list_names():
        files.remove(instance.crt_list(name))
    sharedstate.converge(config)
    return lines


def replace_file(instance, path, data, config, mode=0o644, services=SERVICES,
                 certificate=False):
    """Store a file the daemons read (a certificate, the 503 page), then have
    the running daemons of services read it: a certificate haproxy holds is
    swapped in its memory (no reload), anything else is reloaded. On a
    failure, put the old file back and reload again. The answer's lines after OK."""
    lines = catch_up(instance, config).lines
    old = files.read(path)
    if old == data:
        if certificate:
            lines += _swap_if_not_served(instance, path, data, config)
        return lines  # unchanged content: the daemons already run it
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with pending(instance, _running(instance, config, services)):
        files.write_atomic(path, data, mode)
        return lines + _reload_or_restore(instance, path, old, config, mode, services,
                                          data if certificate else None)


def _swap_if_not_served(instance, path, data, config):
    """The same certificate again, and haproxy serves another one under its
    path (a PUT of an older release killed before the swap): swap it now."""
    daemon = daemon_for("haproxy", instance, config)
    if daemon.process() is None or daemon.serves_certificate(os.path.abspath(path), data) \
            in (True, None):
        return []
    return [daemon.replace_certificate(os.path.abspath(path), data) or daemon.apply()]


def _running(instance, config, services):
    return [s for s in services if daemon_for(s, instance, config).process() is not None]


def remove_file(instance, path, config, services=SERVICES):
    lines = catch_up(instance, config).lines
    old = files.read(path)
    with pending(instance, _running(instance, config, services)):
        files.remove(path)
        return lines + _reload_or_restore(instance, path, old, config, 0o644, services)


def _reload_or_restore(instance, path, old, config, mode, services, certificate=None):
    running = [d for d in (daemon_for(s, instance, config) for s in services) if d.process()]
    lines, done = [], []
    try:
        for daemon in running:
            swapped = None
            if not render_from_template(daemon) and certificate is not None \
                    and hasattr(daemon, "replace_certificate"):
                swapped = daemon.replace_certificate(os.path.abspath(path), certificate)
            lines.append(swapped or daemon.apply())
            if not swapped:
                caught_up(instance, daemon.name)
            done.append(daemon)
    except BaseException as error:
        files.restore(path, old, mode)
        for daemon in running:
            _bring_back(daemon, True)
            if daemon in done:
                daemon.record_outcome("rolled back: %s refused the same change" % (
                    running[len(done)].name if len(done) < len(running) else "a later step"))
        if isinstance(error, DaemonFailed):
            raise Conflict("%s; the previous file is back in place" % error, error.output)
        raise
    return lines


def _bring_back(daemon, was_running):
    """After a failed change, run the restored config again (or stop a daemon
    the change started). A daemon that will not come back is a 500."""
    try:
        if was_running:
            daemon.apply(keep_outcome=False)
            caught_up(daemon.instance, daemon.name)
        elif daemon.process() is not None:
            daemon.stop()
    except DaemonFailed as failure:
        raise ServerError("%s daemon %s could not be restored: %s"
                          % (daemon.name, daemon.instance.id, failure))
