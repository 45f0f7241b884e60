"""Data sources for ``graphc train``: image folders, tables, text, and in-memory arrays.

Every kind prepares three map-style splits of numpy examples (:class:`graphc.data.source.Prepared`)
that one torch DataLoader pipeline (:mod:`graphc.data.loader`) batches. The source modules stay
torch-free so DataLoader workers and ``graphc check`` stay light. See docs/data.md.
"""
