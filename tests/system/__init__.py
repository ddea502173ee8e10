"""The install under real systemd: `make install` into a Debian 12 image
booted with systemd-nspawn (systemd as PID 1, its own journal and control
groups; tests/support/nspawn.py), driven as a controller and an operator
would: over the API with mutual TLS, with systemctl, kill -9 and reboots.
What only real systemd can show is proven here: the installed units start
and stay up, a tenant's daemons live outside every API unit's control group
(restarting lighttpd touches none of them, the journal names no left-over
process), and the supervisor brings a killed daemon back and every tenant
back after a reboot, except one an operator stopped. (A package, so that
its module names cannot clash with another tier's.)"""
