"""The local development Kafka broker: a single KRaft node on 127.0.0.1 run from Maven jars.

Everything lives in ``streams.broker.local`` (``from streams.broker import local``).
"""
