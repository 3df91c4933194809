"""POST /v1/responses, the OpenAI Responses API, on the chat search path."""
