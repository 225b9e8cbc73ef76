"""Replay buffers and running statistics used by learners: pure, bounded, serializable (no I/O)."""
