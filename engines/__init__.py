"""Generator implementations: in-process vLLM (``vllm_local``) and a remote vLLM server
(``remote``). Each module imports its heavy dependencies only when constructed."""
