"""The standby keeps itself in step with the active node (`octctl sync`, run by
a systemd timer every 10 s and on demand).

On a node that is standby now in ACTIVE-STANDBY: read the active node's
manifest (GET /manifest, mutual TLS with this node's own client
certificate), compare it with this node's, fetch what differs with the
ordinary GET endpoints, and apply it through this node's own API in process
(app.handle): the same routes, change slots, locks, validations and rollback
as a controller's request. Per instance, in this order: certificates (new or
changed), then the crt-lists that name them, before the configs that name
either, the 503 page, the configs; then configs the active no longer has,
before the crt-lists and then the certificates they used; an
instance the active no longer has is deleted whole. An instance that fails
is skipped and reported; the others go on. The active unreachable: nothing
changes here. Nothing to do: one request, no change, no reload.

What the peer says is judged before anything is done: a manifest over
[sync] max_manifest_bytes is refused unread, one of another shape than
manifest.build() makes is refused whole (manifest.checked), and one that
would take away too much of this node is refused (mass_delete) unless an
operator confirms (`octctl sync --allow-mass-delete`, one run). Each request
to the peer has [sync] timeout seconds in all (Remote); a file's body is held
to its [limits]. A refusal, like any failure, is one line and sync_error.

Runs never overlap (sync.lock); a run stops starting new instances past
[sync] budget seconds. The outcome is kept in sync-state.json for /status.
"""
import io
import json
import os
import time

from . import manifest, topology
from .layout import SERVICES, Instance, sync_lock_path
from .sync_state import load_state, store_state



class Remote:
    """The active node's API: one keep-alive TLS connection, our client
    certificate. Each request has [sync] timeout seconds in all, from
    connecting to the answer's last byte (not per read: a peer trickling a
    byte at a time runs out of it), and a bound on its body."""

    def __init__(self, config, address):
        import ssl

        context = ssl.create_default_context(cafile=config.get("sync", "ca_file") or None)
        context.load_cert_chain(config.get("sync", "client_certificate"))
        self.timeout = config.number("sync", "timeout")
        self.connection = _connection_class()(
            address.strip("[]"), int(config.number("sync", "port")), context=context,
            timeout=self.timeout)

    def get(self, path, limit):
        """(status, body bytes). TooLarge past limit bytes of body (the rest
        unread), Deadline past the request's time; either closes the
        connection (the next request opens another)."""
        import http.client

        self.connection.deadline = time.monotonic() + self.timeout
        try:
            self.connection.request("GET", path)
            response = self.connection.getresponse()
            length = response.getheader("Content-Length") or ""
            if length.strip().isdigit() and int(length) > limit:
                raise TooLarge(path, limit)
            body = bytearray()
            while True:
                chunk = response.read(min(1 << 16, limit + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
                if len(body) > limit:
                    raise TooLarge(path, limit)
        except TimeoutError:
            self.close()
            raise Deadline("GET %s: no whole answer within %g s" % (path, self.timeout)) \
                from None
        except (OSError, http.client.HTTPException, ValueError):
            self.close()
            raise
        if response.getheader("X-Private-Key") == "withheld":  # handlers/certificates.py
            raise SyncFailed("the active node withheld the private key of %s: add this node's "
                             "sync name (the CN of its [sync] client_certificate) to the active "
                             "node's [sync] peer_client_names" % path)
        return response.status, body

    def close(self):
        self.connection.close()


class TooLarge(ValueError):
    def __init__(self, path, limit):
        super().__init__("GET %s: the answer is over %d bytes: refused unread" % (path, limit))


class Deadline(OSError):
    """The active node did not answer a request in whole within its time."""


def _connection_class():
    """http.client's HTTPSConnection, its socket reads and writes held to the
    request's deadline (set by Remote.get before each request)."""
    import http.client
    import socket

    class Reader(io.RawIOBase):
        """The socket's own reader (which keeps the socket open until it is
        closed, as http.client expects), each read given only the time left."""

        def __init__(self, connection, sock):
            self.connection, self.sock = connection, sock
            self.raw = sock.makefile("rb", buffering=0)

        def readable(self):
            return True

        def readinto(self, buffer):
            self.sock.settimeout(self.connection.remaining())
            return self.raw.readinto(buffer)

        def close(self):
            self.raw.close()
            super().close()

    class Socket:
        """The TLS socket, each read and write given only the time left."""

        def __init__(self, connection, sock):
            self.connection, self.sock = connection, sock

        def makefile(self, mode):
            return io.BufferedReader(Reader(self.connection, self.sock))

        def sendall(self, data):
            self.sock.settimeout(self.connection.remaining())
            return self.sock.sendall(data)

        def __getattr__(self, name):
            return getattr(self.sock, name)

    class Connection(http.client.HTTPSConnection):
        deadline = None

        def remaining(self):
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("the request's time ran out")
            return left

        def connect(self):
            self.timeout = self.remaining()  # the connect and the TLS handshake too
            super().connect()
            self.sock = Socket(self, self.sock)

    return Connection


class Step:
    """One change the sync makes on this node, named as the active node's URL
    names the file: PUT (with the body fetched from there) or DELETE of an
    instance's config, 503 page, certificate or crt-list, or DELETE of the
    instance."""

    def __init__(self, method, instance, kind, name=None):
        self.method, self.instance, self.kind, self.name = method, instance, kind, name

    @property
    def path(self):
        if self.kind == "instance":
            return "/instances/%s" % self.instance
        if self.kind == "certificate":
            return "/instances/%s/certificates/%s" % (self.instance, self.name)
        if self.kind == "crt-list":
            return "/instances/%s/crt-lists/%s" % (self.instance, self.name)
        return "/instances/%s/%s" % (self.instance, self.kind)

    @property
    def limit(self):
        """The [limits] key that bounds the file's size here (changes.within_limit)."""
        if self.kind == "crt-list":
            return "crt_list"
        return self.kind if self.kind in ("certificate", "custom503") else "config"

    def __repr__(self):
        return "%s %s" % (self.method, self.path)

    def carry_out(self, config, body):
        """This node's write side, as a controller's request would change it:
        the change gate, the instance's lock, every check, the rollback."""
        from . import changes
        from .gate import change_gate

        with change_gate(config):
            if self.method == "DELETE":
                if self.kind == "instance":
                    return changes.delete_instance(config, self.instance)
                if self.kind == "certificate":
                    return changes.delete_certificate(config, self.instance, self.name)
                if self.kind == "crt-list":
                    return changes.delete_crt_list(config, self.instance, self.name)
                if self.kind == "custom503":
                    return changes.delete_custom503(config, self.instance)
                return changes.delete_config(config, self.instance, self.kind)
            if self.kind == "certificate":
                return changes.put_certificate(config, self.instance, self.name, body)
            if self.kind == "crt-list":
                return changes.put_crt_list(config, self.instance, self.name, body)
            if self.kind == "custom503":
                return changes.put_custom503(config, self.instance, body)
            return changes.put_config(config, self.instance, self.kind, body)


def run(config, allow_mass_delete=False):
    """One sync run; a one-line summary. The state goes to sync-state.json.
    allow_mass_delete: this run may take away what mass_delete() refuses
    (an operator's confirmation, for one run)."""
    from .system.locks import try_lock

    lock = try_lock(sync_lock_path(config.state_dir))
    if lock is None:
        return "another sync is running: nothing to do"
    try:
        return _run_locked(config, allow_mass_delete)
    finally:
        os.close(lock)


def _run_locked(config, allow_mass_delete):
    finished = _finish_interrupted(config)
    try:
        summary = _sync_locked(config, allow_mass_delete)
    except Exception as error:  # recorded in one line, never a traceback
        state = load_state(config.state_dir)
        state["error"] = "the sync failed: %s: %s" % (
            type(error).__name__, " ".join(str(error).split())[:300])
        store_state(config.state_dir, state)
        summary = "not synced: " + state["error"]
    return "%s; %s" % (finished, summary) if finished else summary


def _finish_interrupted(config):
    """Changes killed between storing files and running them leave their
    daemons named in the instance's reload.pending (running.catch_up):
    finish them here, on every node. No request may come to do it: an active
    node's controller skips a certificate whose ETag already matches, and a
    standby's files may already match the active's. "" when there was
    nothing to finish. What still fails is kept in sync-state.json
    (interrupted_failing): `octctl sync` then exits 1."""
    from .layout import RELOAD_PENDING_NAME, instances_dir, is_instance_id

    base = instances_dir(config.state_dir)
    try:
        marked = sorted(name for name in os.listdir(base) if is_instance_id(name) and
                        os.access(os.path.join(base, name, RELOAD_PENDING_NAME), os.F_OK))
    except FileNotFoundError:
        marked = []
    state = load_state(config.state_dir)
    if not marked:
        if state.pop("interrupted_failing", None) is not None:
            store_state(config.state_dir, state)
        return ""
    from .errors import ClusterTransition
    from .gate import change_gate
    from .running import catch_up
    from .system.locks import instance_lock

    # Half the sync's budget, so that a standby's pull still gets its turn.
    deadline = time.time() + config.number("sync", "budget") / 2
    done, failing = 0, {}
    for name in marked:
        if time.time() > deadline:
            failing[name] = "not reached: left for the next run"
            continue
        instance = Instance(config.state_dir, name)
        try:
            with change_gate(config), instance_lock(instance, create=False):
                outcome = catch_up(instance, config)
        except ClusterTransition:
            return "%d instances with an interrupted change: after the topology change" % len(
                marked)
        except Exception as error:  # one instance's trouble must not stop the others
            failing[name] = "%s: %s" % (type(error).__name__, error)
            continue
        done += len(outcome.caught_up)
        if outcome.failed:
            failing[name] = " ".join(outcome.failed_lines)
    state["interrupted_failing"] = failing
    store_state(config.state_dir, state)
    return "interrupted changes: %d daemons caught up, %d instances failing%s" % (
        done, len(failing), "".join(" (%s: %s)" % item for item in sorted(failing.items())))


def _sync_locked(config, allow_mass_delete=False):
    from .appliance import holds_ha_ip, own_addresses

    stored = topology.load(config.state_dir)
    if stored["topology"] != "ACTIVE-STANDBY":
        return "topology %s: nothing to do (only a standby syncs)" % stored["topology"]
    if holds_ha_ip(config, stored):
        return "this node is active: nothing to do (only a standby syncs)"
    own = topology.own_address(stored, own_addresses(config))
    peers = [a for a in stored["all_ips"] if a != own and (":" in a) == (":" in (own or ""))]
    state = load_state(config.state_dir)
    started = time.time()
    state["last_run"] = started
    if not peers:
        return _unreachable(config, state, "no peer address in all_ips")
    import http.client

    try:
        remote = Remote(config, peers[0])
        status, body = remote.get("/manifest", int(config.number("sync", "max_manifest_bytes")))
        if status != 200:
            raise OSError("GET /manifest answered %d" % status)
    except TooLarge as error:
        return _refused(config, state, "the manifest of %s is refused: %s" % (peers[0], error))
    except (OSError, ValueError, http.client.HTTPException) as error:
        return _unreachable(config, state, "active node %s unreachable: %s" % (
            peers[0], error or type(error).__name__))
    try:
        active, wanted = manifest.checked(json.loads(body))
    except (ValueError, RecursionError) as error:
        remote.close()
        return _refused(config, state, "the manifest of %s is malformed: %s" % (
            peers[0], " ".join(str(error).split())[:200] or type(error).__name__))
    del body
    if active != 1:
        remote.close()
        return _unreachable(config, state, "the peer %s is not the active node" % peers[0])
    have = manifest.build(config)["instances"]
    refusal = mass_delete(have, wanted, config.number("sync", "max_delete_share"))
    if refusal and not allow_mass_delete:
        remote.close()
        return _refused(config, state, "the manifest of %s %s: nothing changed; "
                        "`octctl sync --allow-mass-delete` confirms" % (peers[0], refusal))
    counter = {"requests": 1}
    failing = {}
    deadline = started + config.number("sync", "budget")
    # Deletions first, on every instance: a port or an address the active
    # moved from one config to another is free before the new one claims it.
    for instance in sorted(set(have)):
        steps = _deletions(instance, wanted.get(instance), have[instance])
        _run_steps(remote, instance, steps, failing, counter, config)
    have = manifest.build(config)["instances"]
    stopped = ""
    for instance in sorted(set(wanted)):
        if instance in failing or wanted[instance] == have.get(instance):
            continue
        if stopped:
            failing[instance] = "not reached: the run stopped when the active node timed out"
            continue
        if time.time() > deadline:
            failing[instance] = "not reached: the run's time budget ran out"
            continue
        steps = _changes(instance, wanted[instance], have.get(instance, {}))
        if not _run_steps(remote, instance, steps, failing, counter, config):
            stopped = "the active node %s timed out (%s)" % (peers[0], failing[instance])
    remote.close()
    have = manifest.build(config)["instances"]
    in_step = sum(1 for instance in wanted if have.get(instance) == wanted[instance])
    if stopped:
        state["error"] = stopped + ": the run stopped"
    else:
        state.update(last_success=time.time(), error="")
    state.update(unreachable_since=None, in_step=in_step, instances=len(wanted),
                 failing=failing, refused="")
    store_state(config.state_dir, state)
    confirmed = " (mass delete confirmed: %s)" % refusal if refusal else ""
    return "%s from %s: %d of %d instances in step, %d changed, %d failing, %d requests%s" % (
        "stopped syncing" if stopped else "synced", peers[0], in_step, len(wanted),
        len(counter.get("touched", ())), len(failing), counter["requests"], confirmed)


def mass_delete(have, wanted, share):
    """Why this node must not do what the manifest asks (None: it may), by
    what it would take away: instances deleted whole, or left without any
    config. Refused: any such loss when the manifest lists no instance at all
    while this node holds some (a reinstalled or broken active node); or more
    than `share` of this node's instances in one run, unless it is one: one
    instance may always go (a controller's DELETE of one tenant of two is
    half, and routine), so a pair of 2 or 3 instances loses them one a run,
    and a peer that lists nothing removes nothing."""
    lost = sorted(instance for instance in have if instance not in wanted or (
        _configs(have[instance]) and not _configs(wanted[instance])))
    if not lost:
        return None
    if not wanted:
        return "lists no instance while this node holds %d" % len(have)
    if len(lost) > 1 and len(lost) > share * len(have):
        return "would take away %d of this node's %d instances (over [sync] " \
            "max_delete_share %g)" % (len(lost), len(have), share)
    return None


def _configs(files):
    return [kind for kind in SERVICES if kind in files]


def _deletions(instance, target, current):
    """What the active no longer has: the whole instance, or configs."""
    if target is None:
        return [Step("DELETE", instance, "instance")]
    return [Step("DELETE", instance, kind) for kind in tuple(reversed(SERVICES))
            if kind in current and kind not in target]


def _changes(instance, target, current):
    """Certificates, then the crt-lists that name them, before the configs
    that name either; the 503 page, the configs; then the 503 page, the
    crt-lists and the certificates the active no longer has, in that order
    (a crt-list goes before the certificates it names)."""
    steps = []
    certificates, had = target.get("certificates", {}), current.get("certificates", {})
    crt_lists, had_lists = target.get("crt-lists", {}), current.get("crt-lists", {})
    for name in sorted(certificates):
        if certificates[name] != had.get(name):
            steps.append(Step("PUT", instance, "certificate", name))
    for name in sorted(crt_lists):
        if crt_lists[name] != had_lists.get(name):
            steps.append(Step("PUT", instance, "crt-list", name))
    for kind in ("custom503",) + SERVICES:
        if kind in target and target[kind] != current.get(kind):
            steps.append(Step("PUT", instance, kind))
    if "custom503" in current and "custom503" not in target:
        steps.append(Step("DELETE", instance, "custom503"))
    for name in sorted(set(had_lists) - set(crt_lists)):
        steps.append(Step("DELETE", instance, "crt-list", name))
    for name in sorted(set(had) - set(certificates)):
        steps.append(Step("DELETE", instance, "certificate", name))
    return steps


def _run_steps(remote, instance, steps, failing, counter, config):
    """Carry out one instance's steps; a failure is recorded and ends that
    instance only (a broken connection to the active node is opened again by
    the next request). False when the active node let a request's time run
    out: the run stops there."""
    import http.client

    from .errors import HTTPError, NotFound, from_system
    from .system import Busy, MachineError

    if steps:
        counter.setdefault("touched", set()).add(instance)
    try:
        for step in steps:
            body = b""
            if step.method == "PUT":
                counter["requests"] += 1
                status, body = remote.get(step.path, int(config.number(
                    "limits", step.limit + "_bytes")))
                if status != 200:
                    raise SyncFailed("GET %s on the active node answered %d" % (
                        step.path, status))
            try:
                step.carry_out(config, bytes(body))
            except NotFound:
                pass  # already gone here
            except (HTTPError, MachineError, Busy) as error:
                refusal = error if isinstance(error, HTTPError) else from_system(error)
                raise SyncFailed("%r: %d %s" % (step, refusal.code, " ".join(
                    ("%s %s" % (refusal.reason, refusal.detail or "")).split())[:300]))
            except Exception as error:  # one instance's trouble must not stop the others
                raise SyncFailed("%r: 500 Internal error: %s: %s" % (
                    step, type(error).__name__, " ".join(str(error).split())[:200]))
    except SyncFailed as failure:
        failing[instance] = failure.reason
    except Deadline as error:
        failing[instance] = "the active node: %s" % error
        return False
    except (OSError, ValueError, http.client.HTTPException) as error:
        failing[instance] = "the active node: %s" % (error or type(error).__name__)
    return True


class SyncFailed(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _refused(config, state, reason):
    """The peer answered what this node will not act on: nothing changed."""
    state.update(error=reason, refused=reason)
    store_state(config.state_dir, state)
    return "not synced: %s" % reason


def _unreachable(config, state, reason):
    state["error"] = reason
    if not state.get("unreachable_since"):
        state["unreachable_since"] = time.time()
    store_state(config.state_dir, state)
    return "not synced: %s (this node's configuration is left as it is)" % reason
