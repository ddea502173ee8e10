"""Test support shared by the suites: network namespaces and an appliance
served inside one. (tests/ is on sys.path for the e2e and proof packages.)"""
