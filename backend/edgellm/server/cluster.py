"""The ClusterControl service: StartClusterHead, JoinCluster, LeaveCluster (Ray clusters,
one per inference session). Tokens are passed through, never logged or echoed in errors.
"""

from __future__ import annotations

import grpc

from edgellm.cluster.manager import ClusterManager, ClusterSession
from edgellm.errors import EdgeLLMError
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
    def __init__(self, clusters: ClusterManager) -> None:
        self._clusters = clusters

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
            session = self._clusters.join(
                request.session_id,
                request.head_address,
                request.token,
                request.peer_resource,
                request.bind_address,
            )
        except EdgeLLMError as exc:
            abort(context, exc)
        return cluster_control_pb2.JoinClusterResponse(node=_node(session, request.peer_resource))

    def LeaveCluster(self, request, context: grpc.ServicerContext):
        return cluster_control_pb2.LeaveClusterResponse(
            left=self._clusters.leave(request.session_id)
        )
