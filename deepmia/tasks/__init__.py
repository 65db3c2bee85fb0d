"""Task packages: one per learning task, each with plan, train, predict and evaluate."""
