"""Operating-system effects: files, locks, processes, daemons, addresses, firewall."""
