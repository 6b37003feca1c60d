"""The host-side egress proxy and its policy engine (DESIGN.md section 4, Network).

The guest's only way out: an SSH remote forward from its 127.0.0.1:3128 to a per-workspace
proxy on an owner-only Unix socket, which judges every connection against the live policy.
"""
