"""Widgets of the counselor's workspace."""
