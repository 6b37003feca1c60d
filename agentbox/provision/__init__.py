"""Everything a guest is given before its first boot: keys, cloud-init user-data, the seed.

Pure file and data work on the host; nothing here talks to the hypervisor or the guest.
"""
