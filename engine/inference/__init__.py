"""Prompts, context fitting, generation and parsing of the model's drafts."""
