"""Handlers, one module per resource; each reads like the contract's table."""
