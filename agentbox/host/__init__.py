"""Host adapters: processes, locks. Below services, above config (DESIGN.md section 2)."""
