"""The Textual TUI (see the TUI issue)."""
