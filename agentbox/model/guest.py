"""Facts about the guest every layer agrees on."""

GUEST_USER = "agent"  # the unprivileged user cloud-init creates; agents and SSH run as it
GUEST_UID = 1000  # the first user cloud-init creates is the agent, with its own group
GUEST_GID = 1000
