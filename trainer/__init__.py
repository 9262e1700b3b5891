"""Offline training of the query extractor from search feedback (SFT, then DPO)."""
