"""Attention ops (multi-head self/cross attention, rotary embeddings)."""
