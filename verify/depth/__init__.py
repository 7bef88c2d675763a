"""``varguard depth``: signal propagation through depth, measured on torch's own modules against
the curves theory/ derives (the report's "Depth" section)."""
