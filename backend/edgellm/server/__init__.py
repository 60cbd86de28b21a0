"""The backend's gRPC server: Inference, Control and grpc.health.v1."""
