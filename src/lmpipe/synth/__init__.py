"""Synthetic data from an LLM: EntiGraph (entity-relation texts) and thought augmentation (TPT / BoLT)."""
