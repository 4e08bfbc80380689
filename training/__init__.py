"""Training: loaders, models, distributed training, evaluation and checkpoints."""
