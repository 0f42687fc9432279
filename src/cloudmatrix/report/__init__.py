"""L7 reports: plots (matplotlib) and tables of study results."""
