"""Knowledge query: similar past cases and reference answers, for the Similar pane and prompts."""
