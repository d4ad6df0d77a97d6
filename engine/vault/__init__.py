"""The encrypted store: header, per-patient keys, index, atomic files, chat history."""
