"""Mixture optimisation beyond one study: online reweighting (``reweight``), the RS2 baseline sampler (``rs2``),
the CPT replay-ratio grid (``cmrgrid``), multi-objective search (``pareto``); their config in ``config``.
Kept light: nothing is imported here."""
