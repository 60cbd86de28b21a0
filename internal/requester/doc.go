// Package requester is the requester's runtime: it answers prompts across
// a swarm's workers (docs/architecture.md, "The request path"). Plan
// discovers the live workers and plans the request over them (a pipeline,
// or prefill/decode); Form starts a Ray head on a backend the caller gives
// and has every stage's worker join it over the swarm; the Cluster it
// returns generates with failover and can be kept for further requests;
// CachedPrefix finds a prompt's cached KV prefix in the swarm before a
// local prefill.
//
// The caller owns the processes: the p2p node (through NodeSwarm, or any
// Swarm) and the backend that hosts the Ray head are passed in, never
// created here, so a long-lived server keeps one of each and forms and
// closes several clusters over them, while `edgellm infer` makes a
// throwaway pair per request. Cancellation is the context's; the package
// knows nothing of signals, terminals or exit codes (errors.go says how its
// errors are told apart).
//
// Decisions:
//   - The requester hosts no stage itself: its backend starts the Ray head
//     and drives the pipeline (tokenizer, sampling), and every layer runs on
//     a worker. The planner is given workers only, so a plan never names the
//     requester; hosting a stage locally is a later option (the head would be
//     started with peer_resource set).
//   - Discovery lists every live member (not only the model's providers) and
//     lets the planner filter, so an unknown model fails at once with the
//     planner's reason instead of after the whole discovery timeout. Only
//     workers whose record came directly from them (so they are reachable and
//     their RTT was measured) are planned.
//   - Planning and forming are two steps so a caller can start its backend
//     between them (infer does: a request the swarm cannot serve fails
//     before a backend is started for it).
//   - A cluster runs concurrent Generate calls at once: the head's backend
//     keeps one engine per plan, which decodes them as one batch. Failovers
//     run one at a time; one replacement serves every generation that lost
//     the same worker (failover.go).
//   - A worker lost during generation is replaced and the answer replayed
//     and continued (failover.go); a worker lost while the cluster is idle
//     closes Done, so a holder can close the cluster and form a new one.
package requester
