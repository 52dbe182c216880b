"""Every workaround of a Faust internal, fenced here; each has a record in docs/decisions/."""
