"""The libvirt backend: the only package that imports the `libvirt` bindings."""

from agentbox.backends.libvirt.backend import LibvirtBackend

__all__ = ["LibvirtBackend"]
