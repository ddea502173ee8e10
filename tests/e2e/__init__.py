"""End-to-end tests: real lighttpd, curl, haproxy and stunnel (a package, so that its
module names cannot clash with tests/unit's, e.g. test_read_endpoints)."""
