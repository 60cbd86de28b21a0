"""The ClusterControl service: StartClusterHead, JoinCluster, LeaveCluster (Ray clusters,
one per inference session). Tokens are passed through, never logged or echoed in errors.

A join that names its model loads it here first (on demand, within the model memory
budget) and holds it until the session leaves, so a worker serving several models keeps
each session's model and unloads only idle ones for another session's.
"""

from __future__ import annotations

import threading

import grpc

from edgellm.cluster.manager import ClusterManager, ClusterSession
from edgellm.errors import EdgeLLMError
from edgellm.server.models import ModelManager
from edgellm.server.status import abort
from edgellm.v1 import cluster_control_pb2, cluster_control_pb2_grpc


def _node(session: ClusterSession, peer: str) -> cluster_control_pb2.ClusterNode:
    return cluster_control_pb2.ClusterNode(
        session_id=session.session_id,
        head_address=session.node.address,
        pid=session.node.pid,
        peer_resource=peer,
    )


class ClusterControl(cluster_control_pb2_grpc.ClusterControlServicer):
    def __init__(self, clusters: ClusterManager, models: ModelManager | None = None) -> None:
        self._clusters = clusters
        self._models = models
        self._held: dict[str, str] = {}  # session id -> the model its join holds
        self._lock = threading.Lock()

    def StartClusterHead(self, request, context: grpc.ServicerContext):
        try:
            session = self._clusters.start_head(
                request.session_id, request.bind_address, request.token, request.peer_resource
            )
        except EdgeLLMError as exc:
            abort(context, exc)
        return cluster_control_pb2.StartClusterHeadResponse(
            node=_node(session, request.peer_resource)
        )

    def JoinCluster(self, request, context: grpc.ServicerContext):
        try:
            self._hold(request.session_id, request.model)
            session = self._clusters.join(
                request.session_id,
                request.head_address,
                request.token,
                request.peer_resource,
                request.bind_address,
            )
        except EdgeLLMError as exc:
            self._release(request.session_id)
            abort(context, exc)
        return cluster_control_pb2.JoinClusterResponse(node=_node(session, request.peer_resource))

    def LeaveCluster(self, request, context: grpc.ServicerContext):
        left = self._clusters.leave(request.session_id)
        self._release(request.session_id)
        return cluster_control_pb2.LeaveClusterResponse(left=left)

    def _hold(self, session_id: str, model_id: str) -> None:
        if not model_id or self._models is None:
            return
        with self._lock:
            if session_id in self._held:
                return  # a repeated join of the session holds its model once
        self._models.acquire(model_id)
        with self._lock:
            self._held[session_id] = model_id

    def _release(self, session_id: str) -> None:
        with self._lock:
            model_id = self._held.pop(session_id, None)
        if model_id is not None and self._models is not None:
            self._models.release(model_id)
