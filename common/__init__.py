"""General utilities every stage may use: model references, files of the checkout, vLLM's CPU defaults."""
