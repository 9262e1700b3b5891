"""Running QExplorer on one machine, outside the runtime worker: the local Kafka broker
(``broker``) and OpenSearch cluster (``opensearch``) from Maven jars, worker processes
(``processes``) and the isolated run (``run``) that the demo, the replay, the benchmarks and
the integration tests share."""
