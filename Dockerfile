# The QExplorer worker (and CLI) image. The model server runs in its own container (vLLM).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY config config
COPY schemas schemas
COPY search search
COPY agents agents
COPY streams streams
COPY marketplace marketplace
COPY trainer trainer
COPY serving serving
COPY review review
COPY cli cli
# The versions the project is tested with (constraints.txt); package-data carries the
# non-Python files (trainer configs, JSON schemas, broker config).
RUN pip install -c constraints.txt . && python -c "import trainer.train, pathlib; \
assert (pathlib.Path(trainer.train.__file__).parent / 'configs' / 'sft.yaml').is_file()"

# Worker state (index replicas) lives on a volume. The default cache directory is next to the
# source tree, which for an installed package is inside site-packages: keep it on the volume.
ENV QEXPLORER_STATE_DIR=/var/lib/qexplorer QEXPLORER_CACHE_DIR=/var/lib/qexplorer/cache
VOLUME ["/var/lib/qexplorer"]
ENTRYPOINT ["qexplorer"]
CMD ["worker"]
