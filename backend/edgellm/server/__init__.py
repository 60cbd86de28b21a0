"""The backend's gRPC server: one module per service, app.py puts them together.

- inference.py: Inference (Generate, Abort);
- model_control.py: ModelControl (load, unload, list models; status);
- cluster.py: ClusterControl (Ray clusters);
- kv.py: KVControl (KV block keys and manifests);
- and the standard grpc.health.v1, SERVING for each.

cluster.py keeps its name from before the Control service was split: the Go end-to-end
tests look for it to tell whether the backend has cluster RPCs.
"""
