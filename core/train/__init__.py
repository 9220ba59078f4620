"""Training: config, model registry, input pipeline, engine (train_one_epoch, evaluate, fit), metrics, sinks."""
