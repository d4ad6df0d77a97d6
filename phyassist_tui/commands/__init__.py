"""Subcommands of ``phyassist``; each module exposes ``register(subparsers)``."""
