"""What a worker does, free of any transport: explore a seed (``explorer``, ``explore``),
extract its queries (``extractor/``, ``prompt``, ``queries``), and decide on model rollouts
(``rollout``). ``streams`` wires these to Kafka."""
