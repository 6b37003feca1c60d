"""Facts about the guest every layer agrees on."""

GUEST_USER = "agent"  # the unprivileged user cloud-init creates; agents and SSH run as it
