"""Config of the generated demo corpus (section ``demo``, stage ``demo``: :mod:`lmpipe.demo.corpus`)."""

from __future__ import annotations

from pydantic import Field

from lmpipe.posttrain.config import InstructDemoConfig
from lmpipe.sections import Section


class DemoConfig(Section):
    """Size of the generated demo corpus (deterministic given ``run.seed``)."""

    prose_docs: int = Field(400, ge=0, description="English prose: docstrings of the Python standard library")
    code_docs: int = Field(300, ge=0, description="Python standard library source, split at top-level defs")
    math_docs: int = Field(600, ge=0, description="generated word problems with worked answers")
    fiction_entities: int = Field(40, ge=1, description="invented organisations, each with an article + QA")
    noise_fraction: float = Field(0.08, ge=0.0, le=0.9, description="share of extra noisy docs")
    toxicity_examples: int = Field(600, ge=0, description="labelled pairs for the toxicity classifier")
    web_pages: int = Field(30, ge=0, description="HTML articles in the demo crawl (data/raw/crawl/*.warc.gz)")
    min_doc_chars: int = Field(200, ge=1)
    max_doc_chars: int = Field(6000, ge=100)
    instruct: InstructDemoConfig = InstructDemoConfig()
