"""What makes and promotes an extractor model, offline: nothing here imports the runtime
worker (``streams``) or the review service.

``dataset`` (candidate queries scored by search feedback, SFT rows, DPO pairs), ``feedback``
(the same rows from the Kafka topics: executed queries scored by moderators' decisions),
``bootstrap`` (a tokenizer and a small Llama from scratch), ``train`` (SFT and DPO with TRL,
model cards), ``plan`` (the time a run will take, printed before it starts), ``loop`` (every
stage as one job, ``qexplorer train all``), ``gate`` (the paired test a candidate must pass)
and ``promote`` (the gate's decision recorded, the rollout published).

Offline scoring lives in ``qexplorer.evaluation``; the replay and the curves, which simulate
a deployment, in ``qexplorer.simulation``.
"""
