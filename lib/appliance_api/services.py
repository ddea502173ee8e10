"""What a change to an instance does to its daemons, addresses and files,
and how it is undone when a step fails.

Callers hold the instance's lock (system.locks.instance_lock). The rule for
every change: the stored files and the running daemons end as they were
before the request, or as the request asked; never in between.
"""
import os

from .errors import Conflict, ServerError
from .layout import SERVICES, existing_instances
from .system import files
from .system.daemons import DaemonFailed, daemon_for
from .system.network import Network, bound_addresses, describe, listeners, overlap


def management_address(config):
    return config.get("api", "management_address")


def instance_addresses(instance, config, services=SERVICES):
    """Service IPs the instance's rendered configs bind."""
    found = set()
    for service in services:
        text = files.read(instance.rendered(service))
        if text is not None:
            found |= bound_addresses(service, text.decode("utf-8", "replace"),
                                     management_address(config))
    return found


def release_unused_addresses(candidates, config):
    """Drop the addresses among candidates that no instance's config binds any more."""
    if not candidates:
        return
    in_use = set()
    for instance in existing_instances(config.state_dir):
        in_use |= instance_addresses(instance, config, instance.configured_services())
    network = Network(config)
    for address in sorted(candidates - in_use):
        network.remove(address)


def put_config(instance, service, template, config):
    """Check, store and run a new config template; the answer's lines after OK."""
    daemon = daemon_for(service, instance, config)
    try:
        rendered = daemon.render(template.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        raise Conflict("Invalid configuration", "The configuration is not UTF-8 text")
    template_path, rendered_path = instance.template(service), instance.rendered(service)
    refuse_shared_listeners(instance, service, rendered.decode("utf-8"), config)

    lines = []
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
    old_addresses = instance_addresses(instance, config, [service])
    was_running = daemon.process() is not None
    new_addresses = bound_addresses(service, rendered.decode("utf-8"), management_address(config))
    try:
        network = Network(config)
        for address in sorted(new_addresses):
            network.add(address)
        files.write_atomic(rendered_path, rendered)
        files.write_atomic(template_path, template)
        lines.append(daemon.apply())
    except BaseException as error:
        files.restore(template_path, old_template)
        files.restore(rendered_path, old_rendered)
        release_unused_addresses(new_addresses - old_addresses, config)
        _bring_back(daemon, was_running)
        if isinstance(error, DaemonFailed):
            raise Conflict("Invalid configuration", "%s\n%s" % (error, error.output))
        raise
    release_unused_addresses(old_addresses - new_addresses, config)
    return lines


def refuse_shared_listeners(instance, service, rendered, config):
    """Conflict if the config would listen where another config already does:
    haproxy's SO_REUSEPORT would let both start and split the traffic."""
    wanted = listeners(service, rendered)
    if not wanted:
        return
    for other in existing_instances(config.state_dir):
        for other_service in other.configured_services():
            if (other.id, other_service) == (instance.id, service):
                continue  # the config this one replaces
            text = files.read(other.rendered(other_service))
            for taken in listeners(other_service, (text or b"").decode("utf-8", "replace")):
                for listener in wanted:
                    if overlap(listener, taken):
                        raise Conflict("Address already in use", "%s is taken by the %s config "
                                       "of instance %s" % (describe(listener), other_service,
                                                           other.id))


def delete_config(instance, service, config):
    daemon = daemon_for(service, instance, config)
    addresses = instance_addresses(instance, config, [service])
    stopped = daemon.stop()
    for path in (instance.template(service), instance.rendered(service)):
        files.remove(path)
    release_unused_addresses(addresses, config)
    return daemon.killed_message() if stopped else "%s daemon %s was not running." % (
        service, instance.id)


def delete_instance(instance, config):
    """Stop every daemon (stunnel in front first), drop unused addresses, remove files."""
    addresses = instance_addresses(instance, config)
    lines = []
    for service in reversed(SERVICES):
        daemon = daemon_for(service, instance, config)
        if daemon.stop():
            lines.append(daemon.killed_message())
        files.remove(instance.template(service))
        files.remove(instance.rendered(service))
    files.remove(instance.custom503)
    for name in instance.certificate_names():
        files.remove(instance.certificate(name))
    release_unused_addresses(addresses, config)
    return lines


def replace_file(instance, path, data, config, mode=0o644, services=SERVICES):
    """Store a file the daemons read (a certificate, the 503 page), then reload
    the running daemons of services; on a failed reload put the old file back
    and reload again. The answer's lines after OK."""
    old = files.read(path)
    if old == data:
        return []  # unchanged content: the daemons already run it
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_atomic(path, data, mode)
    return _reload_or_restore(instance, path, old, config, mode, services)


def remove_file(instance, path, config, services=SERVICES):
    old = files.read(path)
    files.remove(path)
    return _reload_or_restore(instance, path, old, config, 0o644, services)


def _reload_or_restore(instance, path, old, config, mode, services):
    running = [d for d in (daemon_for(s, instance, config) for s in services) if d.process()]
    lines = []
    try:
        for daemon in running:
            render_from_template(daemon)
            lines.append(daemon.apply())
    except BaseException as error:
        files.restore(path, old, mode)
        for daemon in running:
            _bring_back(daemon, True)
        if isinstance(error, DaemonFailed):
            raise Conflict("%s; the previous file is back in place" % error, error.output)
        raise
    return lines


def render_from_template(daemon):
    """Make the rendered config the stored template's rendering again. A PUT
    killed between its two renames leaves a rendered file GET does not show;
    no reload may run it."""
    template = files.read(daemon.instance.template(daemon.name))
    if template is None:
        return
    rendered = daemon.render(template.decode("utf-8", "replace")).encode("utf-8")
    if files.read(daemon.rendered_path) != rendered:
        files.write_atomic(daemon.rendered_path, rendered)


def _bring_back(daemon, was_running):
    """After a failed change, run the restored config again (or stop a daemon
    the change started). A daemon that will not come back is a 500."""
    try:
        if was_running:
            daemon.apply()
        elif daemon.process() is not None:
            daemon.stop()
    except DaemonFailed as failure:
        raise ServerError("%s daemon %s could not be restored: %s"
                          % (daemon.name, daemon.instance.id, failure))
