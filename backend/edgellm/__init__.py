"""EdgeLLM backend: the Python side of an EdgeLLM peer (models, engines, gRPC server)."""

__version__ = "0.1.0"
