"""The backend's gRPC server: Inference, ModelControl, ClusterControl, KVControl and
grpc.health.v1."""
