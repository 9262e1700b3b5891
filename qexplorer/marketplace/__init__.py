"""Labelled marketplaces for the demo, the tests and the evaluation.

``synthetic`` generates one offline (benign listings plus disguised toxic clusters, English and
Chinese); ``datasets`` reads the real labelled sets in ``../shared/datasets``. Both produce
:class:`marketplace.items.LabelledItem`.
"""
