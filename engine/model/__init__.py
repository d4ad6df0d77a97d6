"""Loading models (HF directory, GGUF, embedded) and switching PEFT adapters."""
