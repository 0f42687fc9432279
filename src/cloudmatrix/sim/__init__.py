"""L6 simulation: the only layer that joins serving logic, the cost model and SimPy."""
