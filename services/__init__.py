"""Services: what the UI and the CLI call (one transaction per user event, plain values in and out)."""
