"""L7 emulator: an OpenAI-compatible HTTP front end that streams tokens at the pace the simulated deployment
would, driving sim/ in step with wall time."""
