"""Encrypted, incremental backup of the vault to other machines, built on rclone.

``targets`` (where, and the keys), ``rclone`` (running the tool), ``snapshots`` (taking and
sending snapshots, listing, verifying), ``restore`` (all-or-nothing restore), ``state``
(local bookkeeping the status line reads), ``service`` (what the CLI and the app call),
``worker`` (the detached sender).
"""
