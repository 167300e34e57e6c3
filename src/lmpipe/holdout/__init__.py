"""A held-out sample drawn at ingest, before any filtering, so the effect of filtering and dedup on held-out
loss is measurable on one set of documents whatever the filters do (:mod:`lmpipe.holdout.sample`)."""
