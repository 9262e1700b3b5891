# The QExplorer worker (and CLI) image. The model server runs in its own container (vLLM).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY schemas schemas
COPY agents agents
COPY streams streams
COPY trainer trainer
COPY qexplorer qexplorer
# The versions the project is tested with (constraints.txt); package-data carries the
# non-Python files (trainer configs, JSON schemas, broker poms, review templates).
RUN pip install -c constraints.txt . && python -c "import trainer.train, pathlib; \
assert (pathlib.Path(trainer.train.__file__).parent / 'configs' / 'sft.yaml').is_file()"

# Worker state (index replicas) lives on a volume. The default cache directory is next to the
# source tree, which for an installed package is inside site-packages: keep it on the volume.
ENV QEXPLORER_STATE_DIR=/var/lib/qexplorer QEXPLORER_CACHE_DIR=/var/lib/qexplorer/cache
VOLUME ["/var/lib/qexplorer"]
ENTRYPOINT ["qexplorer"]
CMD ["worker"]
