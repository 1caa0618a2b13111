"""Checkpoint, video and weight-file input/output."""
