"""agentbox: disposable local virtual machines as safe workspaces for AI agents."""

__version__ = "0.1.0"
