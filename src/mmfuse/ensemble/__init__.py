"""Linear members combined on out-of-fold evidence (auto mode's cheap, strong candidates)."""
