"""The tools around the service: replay, simulate, evaluate, bench, demo, produce, tail, broker."""
