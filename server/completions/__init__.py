"""POST /v1/completions, the legacy OpenAI Completions API, on the chat search path."""
