"""Text in, activations out: corpus, model loading, residual-stream capture, normalization."""
