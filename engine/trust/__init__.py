"""Audit log, risk flags, terminal sanitizing, process hardening, health checks."""
