// Package serve is the engine behind `edgellm serve`: it answers the
// OpenAI-compatible API (internal/openai) and the Inference socket that
// `edgellm infer` uses when a serve runs on its data directory, from this
// node's backend or through the swarm. docs/architecture.md has the whole
// picture.
//
// Decisions:
//   - Routing, per request, takes the decisions infer takes: without a swarm
//     every request runs on this node's backend; with one, a model this node
//     serves itself (serve --worker, or --local) runs here, after a lookup of
//     the prompt's prefix in the swarm's KV cache, and any other model runs
//     across the swarm's workers with the requester runtime (discover, plan,
//     form a cluster, fail over).
//   - A formed cluster stays warm between requests (the cluster pool), so the
//     second request to a split model pays no discovery, Ray start or joins.
//     It closes after an idle timeout, or at once when a member is lost while
//     idle; the next request forms a new one. This node's backend heads one
//     Ray cluster at a time (the backend drives one cluster), so a request
//     for another model's plan closes the warm one first (once the
//     generations on it ended); swarm requests for the warm cluster's model
//     run on it at once, and its engine batches them (clusters.go).
//   - Warm-up: before Ready, every served model is loaded and generates one
//     token on this node's backend, so the first request pays neither the
//     load nor the first-call costs. A model served through the swarm is
//     warmed by forming its cluster once.
//   - A caller that goes away (HTTP client disconnect, socket caller gone,
//     SIGTERM past the grace) cancels the generation's context; the local
//     route then sends the backend's Abort at once, the swarm route's
//     cluster does the same on its head.
package serve
