"""The embedded demo corpus, generated deterministically from a seed: no download needed.

Domains (each in a different file format, so ingestion is exercised end to end):

=========  ==========================================  ==========================
domain     what                                         file
=========  ==========================================  ==========================
prose      docstrings of the Python standard library   ``prose.jsonl.gz``
code       standard-library functions and classes      ``code.parquet``
math       word problems with worked answers           ``math.jsonl``
fiction    articles about invented organisations       ``fiction/*.md``
web        noise: boilerplate, spam, toxic, mojibake…  ``web/*``
web        a crawl: HTML articles in page boilerplate  ``crawl/pages.warc.gz``
           plus records ingestion must quarantine
=========  ==========================================  ==========================

Exact and near duplicates are planted in prose and fiction; toxic noise uses terms of the filter's default word
list (LDNOOBW English). ``labels/toxicity.jsonl`` holds the demo's labelled examples (clean passages vs passages
with mild insults, none on that list) for training the filter's toxicity classifier (not ingested). The
closed-book QA set about the fiction articles goes to ``<eval_dir>/fiction_qa.jsonl``; ``summary.json`` records
what was planted where.
Instruction data for post-training (chats, verifiable prompts) goes to ``instruct/`` and its held-out evaluation
sets beside the QA set (:mod:`lmpipe.demo.instruct`).

The generator and the stage entry are in :mod:`.corpus`, its section in :mod:`.config`; nothing is imported
here, so ``lmpipe.config`` stays cheap to import.
"""
