# appliance-api: `make run` serves the API on https://$(ADDR):$(PORT); `make test` runs every test.
# Both install what they need: Debian packages (apt) and a virtual environment (.venv).

ADDR ?= 127.0.0.1
PORT ?= 8443
PYTHON ?= /usr/bin/python3
VENV := $(CURDIR)/.venv
VAR := $(CURDIR)/var
PREFIX ?= /usr
DESTDIR ?=
SYSCONFDIR ?= /etc
STATEDIR ?= /var/lib/appliance-api

# Everything the API, `make run` and `make test` use: the daemons the API drives,
# lighttpd's TLS module (Debian ships it apart, and only recommends it), the
# tools the tests run, and Debian's Python packages that an appliance image may
# use instead of the venv's (the in-process tests run on both).
# tests/unit/test_packages.py fails when a program or module is not covered.
DEBIAN_PACKAGES := lighttpd lighttpd-mod-openssl haproxy stunnel4 iptables iproute2 curl openssl procps \
	make logrotate keepalived systemd systemd-container debootstrap \
	python3 python3-venv python3-cryptography python3-psutil python3-pytest python3-webtest
# What the Debian 12 image that tests/system boots under systemd-nspawn holds:
# the appliance's runtime part of the list (not the tools that build, test or
# boot it), systemd as init, and dbus. A package added above for the API
# reaches the image without a second edit.
SYSTEM_IMAGE_PACKAGES := $(filter-out make python3-venv python3-pytest python3-webtest \
	systemd-container debootstrap,$(DEBIAN_PACKAGES)) systemd-sysv dbus
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all deps debian-packages print-debian-packages venv pki run test test-unit test-debian test-e2e \
	bench bench-reload bench-failover bench-sync bench-check proof install clean \
	system-image test-system bench-recovery

all: test

deps: debian-packages venv

print-debian-packages:
	@echo $(DEBIAN_PACKAGES)

debian-packages:
	@missing=""; for package in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$package 2>/dev/null | grep -q "install ok installed" \
			|| missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

pki: $(VAR)/pki/ca.pem

$(VAR)/pki/ca.pem: | venv
	$(VENV)/bin/python tools/pki.py --out $(VAR)/pki --server-address $(ADDR)

# The supervisor beside lighttpd, ending with it; lighttpd by its absolute
# path, as systemd starts it: its graceful restart (PUT /certificate) needs one.
run: deps pki
	@$(VENV)/bin/python tools/devsite.py --folder $(VAR)/run --address $(ADDR) --port $(PORT) \
		--pki $(VAR)/pki --python $(VENV)/bin/python >/dev/null
	@echo "appliance-api on https://$(ADDR):$(PORT) (state in $(VAR)/run/state, logs in $(VAR)/run/log)"
	@echo "Try: curl --cacert var/pki/ca.pem -E var/pki/client.pem https://$(ADDR):$(PORT)/status"
	@echo "The supervisor (octctl supervise) starts stored tenants and restarts any that dies: $(VAR)/run/log/supervisor.log"
	$(VENV)/bin/python bin/octctl --config $(VAR)/run/appliance-api.ini supervise --while-pid $$$$ \
		>>$(VAR)/run/log/supervisor.log 2>&1 & exec /usr/sbin/lighttpd -D -f $(VAR)/run/lighttpd.conf

test: deps
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests
	@echo "In-process tests again under Debian's python3 with python3-cryptography and python3-psutil:"
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/unit

# The heavier proof runs: more examples, rounds and crash trials; prints the figures table.
# The systemd tier's full form too: every SIGKILL check over several rounds.
proof: deps
	APPLIANCE_PROOF=heavy $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/proof tests/system

bench: deps pki
	$(VENV)/bin/python bench/bench.py

bench-reload: deps pki
	$(VENV)/bin/python bench/bench_reload.py

# What confining haproxy's check of a tenant's config costs (bare against confined).
bench-check: deps pki
	$(VENV)/bin/python bench/bench_check.py

# An active/standby pair in network namespaces: failover times, failed requests.
bench-failover: deps
	$(VENV)/bin/python bench/bench_failover.py

# The standby's sync: a change on the active until it runs on the standby; a no-op run.
bench-sync: deps
	$(VENV)/bin/python bench/bench_sync.py

# The Debian 12 root tests/system boots (built once, about a minute; kept in
# var/system-image under a hash of its package list and mirror). Prints its path.
system-image: debian-packages
	@$(PYTHON) tools/system_image.py --cache $(VAR)/system-image $(SYSTEM_IMAGE_PACKAGES)

# The systemd tier alone (make test runs it too, make proof its full form):
# the install booted under real systemd.
test-system: deps
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/system

# Boot to every tenant serving (10, 100, 500 instances), SIGKILL to serving again,
# in the image tests/system boots.
bench-recovery: deps
	$(VENV)/bin/python bench/bench_recovery.py

clean:
	rm -rf $(VAR) $(VENV)

install:
	install -d $(DESTDIR)$(PREFIX)/lib/appliance-api/cgi-bin $(DESTDIR)$(PREFIX)/lib/appliance-api/tools
	install -m 0755 cgi-bin/appliance-api $(DESTDIR)$(PREFIX)/lib/appliance-api/cgi-bin/
	cd lib && find appliance_api -name '*.py' -exec install -D -m 0644 {} $(DESTDIR)$(PREFIX)/lib/appliance-api/lib/{} \;
	install -m 0755 tools/lighttpd_local.py $(DESTDIR)$(PREFIX)/lib/appliance-api/tools/
	install -D -m 0755 bin/octctl $(DESTDIR)$(PREFIX)/lib/appliance-api/bin/octctl
	install -d $(DESTDIR)$(PREFIX)/sbin
	ln -sf ../lib/appliance-api/bin/octctl $(DESTDIR)$(PREFIX)/sbin/octctl
	install -d $(DESTDIR)$(SYSCONFDIR)/appliance-api
	install -m 0644 conf/lighttpd.conf $(DESTDIR)$(SYSCONFDIR)/appliance-api/lighttpd.conf
	test -e $(DESTDIR)$(SYSCONFDIR)/appliance-api/appliance-api.ini || \
		install -m 0644 conf/appliance-api.ini $(DESTDIR)$(SYSCONFDIR)/appliance-api/appliance-api.ini
	install -d $(DESTDIR)/lib/systemd/system/lighttpd.service.d
	for unit in appliance-api-sync.service appliance-api-sync.timer \
			appliance-api-supervisor.service appliance-tenants.slice; do \
		sed 's|@PREFIX@|$(PREFIX)|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' conf/$$unit \
			> $(DESTDIR)/lib/systemd/system/$$unit; \
	done
	# Enabled, as `systemctl enable` would (its [Install] section): every node runs it.
	install -d $(DESTDIR)$(SYSCONFDIR)/systemd/system/timers.target.wants
	ln -sf /lib/systemd/system/appliance-api-sync.timer \
		$(DESTDIR)$(SYSCONFDIR)/systemd/system/timers.target.wants/appliance-api-sync.timer
	# The same for the supervisor: every stored instance's daemons run from boot on.
	install -d $(DESTDIR)$(SYSCONFDIR)/systemd/system/multi-user.target.wants
	ln -sf /lib/systemd/system/appliance-api-supervisor.service \
		$(DESTDIR)$(SYSCONFDIR)/systemd/system/multi-user.target.wants/appliance-api-supervisor.service
	sed 's|@PREFIX@|$(PREFIX)|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' conf/lighttpd-drop-in.conf \
		> $(DESTDIR)/lib/systemd/system/lighttpd.service.d/appliance-api.conf
	install -D -m 0644 conf/sysctl.conf $(DESTDIR)$(SYSCONFDIR)/sysctl.d/60-appliance-api.conf
	install -d $(DESTDIR)$(SYSCONFDIR)/logrotate.d
	sed 's|@STATEDIR@|$(STATEDIR)|g' conf/logrotate.conf > $(DESTDIR)$(SYSCONFDIR)/logrotate.d/appliance-api
	install -d -m 0700 $(DESTDIR)$(STATEDIR)
