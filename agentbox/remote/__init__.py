"""SSH into guests with paramiko (the only package that imports it), host keys pinned."""
