"""L7 deployment planner: a search space pruned for feasibility, the analytic fast path with prefill/decode
rate matching and a Pareto front, simulation checks of the best deployments, and an optional Ray sweep."""
