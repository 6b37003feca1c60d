"""The credential gateway: API keys stay on the host (see server.py)."""
