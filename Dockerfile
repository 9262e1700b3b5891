# The QExplorer worker (and CLI) image. The model server runs in its own container (vLLM).

# The disguise folding's extension (native/fold, Rust), built into a wheel apart so the image
# carries no compiler. Crates pinned by native/fold/Cargo.lock.
FROM python:3.11-slim AS fold
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates gcc libc6-dev \
    && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
ENV PATH=/root/.cargo/bin:$PATH
COPY native/fold /src/fold
RUN pip wheel --no-deps -w /wheels /src/fold

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
COPY --from=fold /wheels /wheels
RUN pip install -c constraints.txt . /wheels/*.whl && python -c "import trainer.train, pathlib; \
assert (pathlib.Path(trainer.train.__file__).parent / 'configs' / 'sft.yaml').is_file()"

# Worker state (index replicas) lives on a volume. The default cache directory is next to the
# source tree, which for an installed package is inside site-packages: keep it on the volume.
ENV QEXPLORER_STATE_DIR=/var/lib/qexplorer QEXPLORER_CACHE_DIR=/var/lib/qexplorer/cache
VOLUME ["/var/lib/qexplorer"]
ENTRYPOINT ["qexplorer"]
CMD ["worker"]
