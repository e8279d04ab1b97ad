"""talkies: a self-hosted, OpenAI-compatible speech server."""

__version__ = "0.1.0"
