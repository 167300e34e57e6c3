"""lmpipe: raw text to an evaluated language model, as one reproducible, orchestrated pipeline."""
