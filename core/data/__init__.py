"""Data: readers (a registry by layout), the prepared image store, splits, the demo generator, uploads."""
