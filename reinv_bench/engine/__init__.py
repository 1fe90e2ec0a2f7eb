"""Running a grid: the plan, its steps, the runner, training, the artifact cache, recipes,
grid files, estimates, prerequisites, progress and threads."""
