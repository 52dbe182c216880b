"""The service: the Faust app, its agents, tables, stages and metrics."""
