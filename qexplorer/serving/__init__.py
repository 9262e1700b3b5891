"""Serving the query extractor: vLLM's OpenAI-compatible server in its own virtualenv.

``environment`` builds that virtualenv from the requirement files in this folder (vLLM pins
its own torch and transformers, so it never shares the project's); ``server`` starts, probes
and stops the server for a model directory. The worker only talks to it over HTTP
(:mod:`agents.extractor.openai_backend`).
"""
