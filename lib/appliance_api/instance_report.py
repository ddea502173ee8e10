"""What `octctl show` and `octctl check` say about one instance, read from
its folder and /proc: nothing here changes the appliance."""
import datetime
import os

from . import running, sharedstate
from .errors import Conflict, HTTPError, from_system
from .health import backing_off, service_states, supervision
from .system import MachineError, files


def describe(instance, config):
    """A dict (octctl show --json prints it as is)."""
    states, state = service_states(instance)
    management_address = config.get("api", "management_address")
    report = {"id": instance.id, "status": state, "services": {}, "service_ips": [],
              "certificates": [], "custom503": os.path.exists(instance.custom503),
              "crt_lists": []}
    service_ips = set()
    scans = {}
    behind, stopped = running.behind(instance), running.stopped_on_purpose(instance)
    supervised = supervision(config.state_dir)
    for service, pid in states:
        template = files.read(instance.template(service)).decode("utf-8", "replace")
        scan = scans[service] = sharedstate.scan_template(instance, service, template, config)
        service_ips |= scan.service_ips(management_address)
        outcome = files.read(instance.outcome(service))
        report["services"][service] = {
            "running": pid is not None, "pid": pid,
            "listeners": [str(listener) for listener in scan.listeners],
            "last_reload": outcome.decode("utf-8", "replace").strip() if outcome else None,
            "behind_stored_files": service in behind,
            "stopped_by_operator": service in stopped,
            "supervision": supervised.get("%s/%s" % (instance.id, service))}
    report["service_ips"] = sorted(service_ips)
    for name in instance.certificate_names():
        report["certificates"].append(dict(name=name, **certificate_facts(
            files.read(instance.certificate(name)))))
    report["crt_lists"] = crt_list_facts(instance, scans)
    return report


def crt_list_facts(instance, scans):
    """Each stored crt-list: its name, the certificate files it names, the
    services whose config reads it."""
    names = instance.crt_list_names()
    if not names:
        return []
    from .crtlist import named_files

    return [{"name": name,
             "files": sorted(named_files(files.read(instance.crt_list(name)) or b"")),
             "used_by": [service for service, scan in scans.items()
                         if scan.names_file(instance.crt_list(name))]}
            for name in names]


def certificate_facts(data):
    """What a stored TLS file is ("key and certificate", "CA file", "CRL"),
    its first certificate's CN (a CRL's issuer), and when it runs out: the
    leaf's notAfter, the earliest CA's, or the earliest CRL's next update."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from .certcheck import CA_FILE, CRL_FILE, KEY_PAIR

    now = datetime.datetime.now(datetime.timezone.utc)
    unreadable = {"kind": None, "cn": None, "expires": None, "days_left": None, "count": 0}
    if b"-----BEGIN X509 CRL-----" in data:
        try:
            crls = [x509.load_pem_x509_crl(block) for block in _blocks(data, b"X509 CRL")]
        except ValueError:
            return unreadable
        ends = [_aware(crl, "next_update") for crl in crls]
        ends = [end for end in ends if end is not None]
        expires = min(ends) if ends else None
        names = crls[0].issuer.get_attributes_for_oid(NameOID.COMMON_NAME) if crls else []
        kind, count = CRL_FILE, len(crls)
    else:
        try:
            certificates = [x509.load_pem_x509_certificate(block)
                            for block in _blocks(data, b"CERTIFICATE")]
        except ValueError:
            return unreadable
        if not certificates:
            return unreadable
        kind = KEY_PAIR if b"PRIVATE KEY-----" in data else CA_FILE
        counted = certificates[:1] if kind == KEY_PAIR else certificates
        expires = min(_aware(certificate, "not_valid_after") for certificate in counted)
        names = certificates[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        count = len(counted)
    return {"kind": kind, "cn": names[0].value if names else None, "count": count,
            "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ") if expires else None,
            "days_left": (expires - now).days if expires else None}


def _blocks(data, label):
    begin, end = b"-----BEGIN %s-----" % label, b"-----END %s-----" % label
    found, position = [], data.find(begin)
    while position >= 0:
        stop = data.index(end, position) + len(end)
        found.append(data[position:stop])
        position = data.find(begin, stop)
    return found


def _aware(item, name):
    """A certificate's or CRL's time as an aware UTC datetime (cryptography
    42 has *_utc; older releases the naive UTC value); None if it has none."""
    value = getattr(item, name + "_utc", None) or getattr(item, name)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


def as_text(report):
    lines = ["instance      %s" % report["id"], "status        %s" % report["status"]]
    for service, facts in report["services"].items():
        running = "running (pid %d)" % facts["pid"] if facts["running"] else "stopped"
        lines.append("%-14s%s" % (service, running))
        lines.append("  listens on  %s" % (" ".join(facts["listeners"]) or "-"))
        lines.append("  last reload %s" % (facts["last_reload"] or "- (none since the "
                                                                  "API recorded them)"))
        if facts["stopped_by_operator"]:
            lines.append("  stopped by an operator (octctl stop): not started again "
                         "until octctl start or a new config")
        supervised = facts["supervision"]
        if supervised:
            lines.append("  restarted by the supervisor: %d times lately%s" % (
                supervised["restarts"], "; backing off" if backing_off(supervised) else ""))
            if supervised.get("last_failure"):
                lines.append("  last failure: %s" % supervised["last_failure"])
        if facts["behind_stored_files"]:
            lines.append("  not yet running the stored files: a change was interrupted "
                         "(the next change or octctl sync runs them)")
    lines.append("service IPs   %s" % (" ".join(report["service_ips"]) or "-"))
    lines.append("custom 503    %s" % ("yes" if report["custom503"] else "no"))
    lines.append("certificates  %s" % ("" if report["certificates"] else "-"))
    for certificate in report["certificates"]:
        if certificate["kind"] is None:
            lines.append("  %s  (no certificate readable in it)" % certificate["name"])
            continue
        left = certificate["days_left"]
        what = {"CA file": "CA file of %d, first CN=%s" % (certificate["count"],
                                                          certificate["cn"]),
                "CRL": "CRL, %d, issuer CN=%s" % (certificate["count"], certificate["cn"])}.get(
            certificate["kind"], "CN=%s" % certificate["cn"])
        runs_out = "no next update" if left is None else "%s %s (%s)" % (
            "next update" if certificate["kind"] == "CRL" else "expires",
            certificate["expires"], "EXPIRED" if left < 0 else "%d days left" % left)
        lines.append("  %s  %s  %s" % (certificate["name"], what, runs_out))
    lines.append("crt-lists     %s" % ("" if report["crt_lists"] else "-"))
    for listed in report["crt_lists"]:
        lines.append("  %s  names %s; %s" % (
            listed["name"], " ".join(listed["files"]) or "nothing",
            "read by " + " and ".join(listed["used_by"]) if listed["used_by"] else "unused"))
    return lines


def check(instance, service, config):
    """(ok, lines): the daemon's own check of the stored config rendered
    afresh, and the API's rules (literal listeners, files in the instance's
    folder, no listener another instance holds, not the pair's own
    addresses). stunnel has no check-only mode: for it, the API's rules and
    every key and certificate file its config names loading in OpenSSL; its
    option names are not checked (a reload would say)."""
    from .certcheck import check_with_openssl
    from .system.daemons import daemon_for
    from .system.locks import instance_lock

    daemon = daemon_for(service, instance, config)
    template = files.read(instance.template(service))
    if template is None:
        return False, ["no %s config" % service]
    text = template.decode("utf-8", "replace")
    lines = []
    try:
        scan = sharedstate.scan_template(instance, service, text, config)
        scan.check(config.state_dir)
        sharedstate.refuse_cluster_addresses(scan, config)
        sharedstate.ApplianceView(config).refuse_shared_listeners(instance, service, scan)
        if service == "haproxy":
            # In the instance folder, beside the files the config names; under
            # the instance's lock, which sweeps temporaries of dead requests.
            candidate = os.path.join(instance.dir, ".%s.check.tmp" % service)
            with instance_lock(instance, create=False):
                if not instance.exists():
                    return False, ["the instance was deleted meanwhile"]
                files.write_atomic(candidate, daemon.render(text).encode("utf-8"), durable=False)
                try:
                    ok, output = daemon.check(candidate)
                finally:
                    files.remove(candidate)
            output = output.replace(candidate, instance.template(service)).strip()
            if not ok:
                return False, ["invalid configuration"] + output.splitlines()
            lines += output.splitlines()
        else:
            for path in sorted({path for _line, path in scan.files}):
                if not os.path.exists(path):
                    raise Conflict("Invalid configuration", "%s does not exist" % path)
                data = files.read(path) if os.path.isfile(path) else b""
                if b"PRIVATE KEY-----" in data:  # key + certificate, as the API stores them
                    check_with_openssl(data)
                    lines.append("%s loads in OpenSSL" % path)
    except (HTTPError, MachineError) as failure:
        error = failure if isinstance(failure, HTTPError) else from_system(failure)
        return False, [error.reason] + error.detail.splitlines()
    if service == "stunnel":
        return True, ["the API's rules pass (stunnel has no check-only mode: its option "
                      "names are checked at start or reload only)"] + lines
    return True, ["configuration is valid"] + lines
