"""Kafka as a library, below everything that uses it: the one factory of aiokafka clients
(``clients``), publishing and reading topics (``io``), and topic administration and checks
(``admin``). The worker (``streams``), the trainer, the review service and the tools all
build on it; nothing here runs on its own."""
