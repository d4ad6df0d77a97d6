"""Screens: unlock, workspace, new patient, training, confirmations."""
