"""quarry-agent: the Quarry endpoint sensor (see docs/agent.md)."""

__version__ = "0.1.0"
