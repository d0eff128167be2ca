"""Property checks and high-precision references for the verification suite (no torch here)."""
