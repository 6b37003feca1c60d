"""Stores: the files agentbox keeps per workspace and per user (records, receipts, the
managed SSH config). Below services, beside the host adapters (DESIGN.md section 2)."""
