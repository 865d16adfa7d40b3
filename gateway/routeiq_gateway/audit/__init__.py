"""The audit trail: one record per admin action, config reload and router-model change, spooled with fsync on the
run volume and shipped in batches to `<store>/audit/YYYY/MM/DD/` (records/shipper.py with audit/shipping.py)."""
