"""Query extractors: the interface (``base``), the backends by name (``registry``:
``keywords``, ``transformers``, ``openai``) and what the model backends share (``decoding``)."""
