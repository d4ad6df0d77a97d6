"""PhyAssist engine: models, generation, analysis, adapters, training and the encrypted store.

Nothing under ``engine`` imports textual or the TUI; it is usable from a Python shell.
"""

__version__ = "0.1.0"
