"""EdgeLLM backend: the Python side of an EdgeLLM peer (models, engines, gRPC server)."""

import os

# An EdgeLLM process is a Ray driver only of a cluster its node started
# (edgellm.cluster.driver). Ray's public calls (ray.get, ray.wait, ray.kill, ray.put, an
# actor call) otherwise start a whole local cluster in the default temp dir when the
# process is not connected: a replaced plan's engine, closing in the background after its
# cluster session had ended, started a head with Ray's dashboard and autoscaler monitor
# outside every work dir (its raylet refused for the token, its directories left in
# /tmp/ray). With this off, such a call raises RaySystemError and starts nothing. Ray reads
# it when first imported, so it is set here, before any EdgeLLM module imports Ray; a
# user's own setting wins.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
