# The QExplorer worker (and CLI) image. The model server runs in its own container (vLLM).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams streams
COPY agents agents
COPY trainer trainer
COPY schemas schemas
COPY marketplace marketplace
COPY serving serving
COPY cli cli
RUN pip install .

# Worker state (index replicas) lives on a volume.
ENV QEXPLORER_STATE_DIR=/var/lib/qexplorer
VOLUME ["/var/lib/qexplorer"]
ENTRYPOINT ["qexplorer"]
CMD ["worker"]
