"""The runtime worker: the faust app and its stages (the replica, the explorer, the watcher,
the rollout follower and the re-explorer), its start-up check, dead-letter replay, the
standing-queries book and metrics."""
