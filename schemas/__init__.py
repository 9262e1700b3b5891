"""Topic contracts: versioned records (``models``), their codec (``codec``), the topic registry
(``topics``) and their exported JSON Schemas (``export``, ``json/``)."""
