"""LLM clients behind one protocol (``lmpipe.llm.types``): the embedded local model (default), any
OpenAI-compatible HTTP server, a persistent response cache in front of either (``backends.make_backend`` picks),
and ``serve-llm``. Nothing is imported here, so ``lmpipe.config`` (which imports ``.config``) stays cheap."""
