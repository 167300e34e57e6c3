"""Post-training: instruction data, SFT → DPO → RLVR through TRL, and the instruction residual."""
