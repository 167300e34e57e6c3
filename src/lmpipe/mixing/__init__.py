"""Mixture optimisation beyond one study: online reweighting (``reweight``), the RS2 baseline sampler (``rs2``),
the CPT replay-ratio grid (``cmrgrid``), multi-objective search (``pareto``); the sections ``mixture``, ``tune`` and
``cmr`` in ``config``. Kept light: nothing is imported here."""
