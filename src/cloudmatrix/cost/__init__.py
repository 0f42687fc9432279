"""L3 cost model: pure functions that price operators, communication and whole steps on one die."""
