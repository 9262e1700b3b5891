"""The streams: the faust worker app, its Kafka consumers (the replica, the rollout follower),
plain clients, topic administration, the local broker, worker processes and metrics."""
