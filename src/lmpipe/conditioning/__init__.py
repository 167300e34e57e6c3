"""Conditioning instead of filtering: PHF control tokens (:mod:`.control`), MeCo metadata + cooldown (:mod:`.meco`)."""
