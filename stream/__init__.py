"""churnwatch service: Faust app, topics, agents, CLI, embedded broker."""
