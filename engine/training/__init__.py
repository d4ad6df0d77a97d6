"""Per-patient LoRA adapters: data from notes and edits, a training subprocess, versions.

The parent (``runner``) builds a job from the encrypted store and starts ``worker`` as a
subprocess; the worker trains with TRL and hands the adapter back sealed with a one-time key.
Heavy libraries (torch, transformers, trl) are imported only where training happens.
"""
