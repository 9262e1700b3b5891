"""Offline learning loop: a base model from scratch, training data from search feedback,
SFT then DPO with TRL, and the evaluation that shows whether it works.

``corpus`` (labelled sets, splits), ``scoring`` (the search-based metrics), ``dataset``
(candidate queries, SFT/DPO rows), ``feedback`` (rows from the Kafka topics), ``bootstrap``
(tokenizer and small Llama from scratch), ``train`` (SFT and DPO), ``evaluate`` (report),
``loop`` (all stages as one job), ``replay`` (the online deployment, simulated).
"""
