"""Ray clusters for one inference session: a head on the requester, workers on the peers.

Every Ray process a backend starts runs in a session (setsid) whose id is the pid of the
`ray start --block` launcher, so the backend stops exactly what it started, by pid; never
`ray stop`, which kills every Ray process on the machine.
"""
