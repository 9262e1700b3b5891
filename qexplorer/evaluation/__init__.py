"""Offline evaluation: what an extractor's queries find in a labelled corpus.

``scoring`` (a corpus in a search index, precision@10, recall, bootstrap intervals, the
oracle span), ``evaluate`` (every method on every corpus: ``qexplorer eval``), ``blending``
(the run-time priors' weights chosen on the other corpora) and ``disguises`` (the disguise
benchmark: ``qexplorer disguises``). Pure of Kafka: the trainer's gate and loop build on it.
"""
