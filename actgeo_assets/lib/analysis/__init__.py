"""What the components mean: cards, readouts, baselines, percolation, the study, layers, lookup."""
