"""Static pages served by the daemon (the wallboard)."""
