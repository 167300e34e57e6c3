"""Post-training: instruction data, SFT → DPO → RLVR through TRL, and the instruction residual.

``lmpipe.config`` imports this package's ``config`` module, so it is loaded first here (either import order works).
"""

import lmpipe.config  # noqa: F401
