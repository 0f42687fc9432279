"""L5 serving logic, clock-free: request lifecycle, KV block pools, batching and routing. Functions take
``now`` as an argument; nothing here knows about SimPy."""
