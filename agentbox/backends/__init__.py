"""Hypervisor backends behind one Protocol."""
