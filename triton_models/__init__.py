"""Model math (networks, schedules, samplers, scoring, training) and the Triton model repository."""
