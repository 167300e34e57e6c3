"""ProX-style refinement: LLM-written edit programs (:mod:`.program`), the ``refine`` stage (:mod:`.run`)."""
