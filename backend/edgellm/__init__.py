"""EdgeLLM backend: the Python side of an EdgeLLM peer (models, engines, gRPC server)."""
