"""The shared training and inference engine: runtime settings, the training loop, sliding-window inference."""
