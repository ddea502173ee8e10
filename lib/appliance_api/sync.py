"""The standby keeps itself in step with the active node (`octctl sync`, run by
a systemd timer every 10 s and on demand).

On a node that is standby now in ACTIVE-STANDBY: read the active node's
manifest (GET /manifest, mutual TLS with this node's own client
certificate), compare it with this node's, fetch what differs with the
ordinary GET endpoints, and apply it through this node's own API in process
(app.handle): the same routes, change slots, locks, validations and rollback
as a controller's request. Per instance, in this order: certificates (new or
changed) before the configs that name them, the 503 page, the configs; then
configs the active no longer has, before the certificates they used; an
instance the active no longer has is deleted whole. An instance that fails
is skipped and reported; the others go on. The active unreachable: nothing
changes here. Nothing to do: one request, no change, no reload.

Runs never overlap (sync.lock); a run stops starting new instances past
[sync] budget seconds. The outcome is kept in sync-state.json for /status.
"""
import fcntl
import io
import json
import os
import time

from . import manifest, topology
from .layout import SERVICES, sync_lock_path, sync_state_path
from .system import files

PATHS = {"haproxy": "/instances/%s/haproxy", "stunnel": "/instances/%s/stunnel",
         "custom503": "/instances/%s/custom503"}


class Remote:
    """The active node's API: one keep-alive TLS connection, our client certificate."""

    def __init__(self, config, address):
        import http.client
        import ssl

        context = ssl.create_default_context(cafile=config.get("sync", "ca_file") or None)
        context.load_cert_chain(config.get("sync", "client_certificate"))
        host = "[%s]" % address if ":" in address else address
        self.connection = http.client.HTTPSConnection(
            host.strip("[]"), int(config.number("sync", "port")), context=context,
            timeout=config.number("sync", "timeout"))

    def get(self, path):
        """(status, body bytes)."""
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self):
        self.connection.close()


class LocalApi:
    """This node's own API, in process: what a controller's request would do."""

    def __init__(self, config):
        self.config = config

    def request(self, method, path, body=b""):
        from .app import handle

        environ = {"REQUEST_METHOD": method, "PATH_INFO": path,
                   "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                   "wsgi.errors": io.StringIO(), "appliance_api.local_caller": "octctl sync"}
        response = handle(environ, self.config)
        return response.status, response.body.decode("utf-8", "replace")


def run(config):
    """One sync run; a one-line summary. The state goes to sync-state.json."""
    lock = os.open(sync_lock_path(config.state_dir), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                   0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "another sync is running: nothing to do"
        return _run_locked(config)
    finally:
        os.close(lock)


def _run_locked(config):
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
    try:
        remote = Remote(config, peers[0])
        status, body = remote.get("/manifest")
        if status != 200:
            raise OSError("GET /manifest answered %d" % status)
        wanted = json.loads(body)["instances"]
    except (OSError, ValueError, KeyError) as error:
        return _unreachable(config, state, "active node %s unreachable: %s" % (peers[0], error))
    requests = 1
    try:
        local = LocalApi(config)
        have = manifest.build(config)["instances"]
        failing, in_step, touched = {}, 0, []
        deadline = started + config.number("sync", "budget")
        for instance in sorted(set(wanted) | set(have)):
            if time.time() > deadline:
                failing[instance] = "not reached: the run's time budget ran out"
                continue
            target, current = wanted.get(instance), have.get(instance, {})
            if target == current:
                in_step += 1
                continue
            touched.append(instance)
            try:
                requests += _apply(local, remote, instance, target, current)
                in_step += 1
            except SyncFailed as failure:
                requests += failure.requests
                failing[instance] = failure.reason
    finally:
        remote.close()
    state.update(last_success=time.time(), error="", unreachable_since=None,
                 in_step=in_step, instances=len(set(wanted)), failing=failing)
    store_state(config.state_dir, state)
    return "synced from %s: %d of %d instances in step, %d changed, %d failing, %d requests" % (
        peers[0], in_step, len(set(wanted)), len(touched), len(failing), requests)


class SyncFailed(Exception):
    def __init__(self, reason, requests):
        super().__init__(reason)
        self.reason = reason
        self.requests = requests


def _apply(local, remote, instance, target, current):
    """Bring one instance to target; the number of requests to the active node."""
    requests = 0

    def fetch(path):
        nonlocal requests
        requests += 1
        status, body = remote.get(path)
        if status != 200:
            raise SyncFailed("GET %s on the active node answered %d" % (path, status), requests)
        return body

    def change(method, path, body=b""):
        status, answer = local.request(method, path, body)
        if status not in (200, 201, 404):
            raise SyncFailed("%s %s: %d %s" % (method, path, status,
                                               " ".join(answer.split())[:300]), requests)

    if target is None:
        change("DELETE", "/instances/%s" % instance)
        return requests
    certificates, had = target.get("certificates", {}), current.get("certificates", {})
    for name in sorted(certificates):
        if certificates[name] != had.get(name):
            path = "/instances/%s/certificates/%s" % (instance, name)
            change("PUT", path, fetch(path))
    for kind in ("custom503",) + SERVICES:
        if kind in target and target[kind] != current.get(kind):
            path = PATHS[kind] % instance
            change("PUT", path, fetch(path))
    for kind in tuple(reversed(SERVICES)) + ("custom503",):
        if kind in current and kind not in target:
            change("DELETE", PATHS[kind] % instance)
    for name in sorted(set(had) - set(certificates)):
        change("DELETE", "/instances/%s/certificates/%s" % (instance, name))
    return requests


def _unreachable(config, state, reason):
    state["error"] = reason
    if not state.get("unreachable_since"):
        state["unreachable_since"] = time.time()
    store_state(config.state_dir, state)
    return "not synced: %s (this node's configuration is left as it is)" % reason


def load_state(state_dir):
    data = files.read(sync_state_path(state_dir))
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {}


def store_state(state_dir, state):
    files.write_atomic(sync_state_path(state_dir), json.dumps(state).encode(), 0o644)


def status_keys(state_dir):
    """What /status adds on a node of a pair (new keys; the original ones stay)."""
    state = load_state(state_dir)
    return {"sync_last_success": state.get("last_success"),
            "sync_instances_in_step": state.get("in_step"),
            "sync_instances": state.get("instances"),
            "sync_failing": state.get("failing", {}),
            "sync_error": state.get("error", ""),
            "sync_unreachable_since": state.get("unreachable_since")}
