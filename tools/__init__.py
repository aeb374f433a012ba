"""Developer tools outside the runtime package: training and evaluating the bundled `shapes` model
(`python -m tools.train_shapes`, `python -m tools.evaluate_shapes`), and the shapes world they share."""
