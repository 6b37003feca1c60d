"""Use cases: synchronous, injected collaborators, progress + cancel, undo on failure."""
