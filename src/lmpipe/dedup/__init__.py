"""Stage ``dedup``: exact and near-duplicate removal (normalised hashes; MinHash LSH + union-find).

Modules: ``exact`` (normalisation, exact keys), ``minhash`` (signatures, LSH bands), ``unionfind``, ``passes``
(the three passes and ``run``, the stage entry), ``config`` (section ``dedup``). Nothing is imported here, so
``lmpipe.config`` stays cheap to import.
"""
