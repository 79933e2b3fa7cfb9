"""Cove: a self-hosted agent runtime with OpenAI-compatible Responses and Containers APIs."""

__version__ = "0.1.0"
