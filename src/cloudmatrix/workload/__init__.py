"""L5 workloads: request arrivals, length distributions and trace readers, all seeded."""
