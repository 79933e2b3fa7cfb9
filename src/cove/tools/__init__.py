"""Hosted tools Cove runs server-side, inside a session's container."""
