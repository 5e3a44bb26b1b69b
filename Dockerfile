# pyserving as a drop-in for the tensorflow/serving image: the same ports (8500 gRPC, 8501
# REST), the same MODEL_NAME / MODEL_BASE_PATH variables and entrypoint path, container
# arguments appended to the command line. Only the image name in a `docker run` changes:
#
#   DOCKER_BUILDKIT=1 docker build -t pyserving .
#   docker run -p 8500:8500 -p 8501:8501 -v "$PWD/models/digits:/models/digits" \
#     -e MODEL_NAME=digits pyserving
#
# What it adds: runs as a non-root user (uid 1000), a HEALTHCHECK on /readyz, SIGTERM
# reaches the server (which drains, then exits 0), tini as PID 1, and a read-only root
# filesystem works (`--read-only --tmpfs /tmp`).
#
# Build arguments:
#   TF_VARIANT=cpu (default)  TensorFlow's CPU build: tensorflow-cpu on x86-64, tensorflow
#                             on arm64 (already CPU-only); about 1 GB.
#   TF_VARIANT=gpu            tensorflow[and-cuda] with NVIDIA's libraries from PyPI, several
#                             GB, linux/amd64 only; run with `--gpus all`.
#   PYTHON_IMAGE              any Debian-based image with python3 -m venv (no registry:
#                             scripts/docker-base builds one from Debian packages).
# Every platform TensorFlow has wheels for builds from the same file:
#   docker buildx build --platform linux/amd64,linux/arm64 -t pyserving .
# Behind a TLS-intercepting proxy, hand pip its CA bundle as a build secret (not kept in
# any layer): --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the pinned dependencies, then pyserving, into a virtualenv
FROM ${PYTHON_IMAGE} AS build
ARG TF_VARIANT=cpu
# binutils for `strip` below; this stage is thrown away, its apt lists with it.
# hadolint ignore=DL3008,DL3009
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils
# pip runs from a venv of its own and installs into the server's (PIP_PYTHON is pip's
# --python), so the image carries no pip, setuptools or build tools.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_PYTHON=/opt/pyserving/bin/python
RUN python3 -m venv /opt/pip \
 && python3 -m venv --without-pip /opt/pyserving
ENV PATH=/opt/pyserving/bin:/opt/pip/bin:$PATH
WORKDIR /src
# The dependencies in a layer of their own, keyed by the lock file only: editing the code
# reuses it instead of downloading TensorFlow again. --no-deps because the lock is complete
# and names tensorflow-cpu, while tensorflow-serving-api asks for `tensorflow` (the CUDA
# build on x86-64); the hashes in the lock make pip check every download.
COPY docker/requirements-${TF_VARIANT}.txt /src/requirements.txt
RUN --mount=type=secret,id=ca \
    if [ "$TF_VARIANT" = gpu ] && [ "$(uname -m)" != x86_64 ]; then \
      echo "TF_VARIANT=gpu: TensorFlow publishes GPU builds for x86-64 only" >&2; exit 1; \
    fi \
 && if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && pip install --no-deps --require-hashes -r requirements.txt

# What a server never reads, ~570 MB of the CPU build: C and C++ headers and sources (for
# compiling against TensorFlow, NumPy or simdjson; TensorFlow's include/ alone is ~290 MB),
# type stubs, the packages' own test suites, and the shared libraries' symbol tables
# (`strip --strip-unneeded` keeps the dynamic symbols that loading and linking use; a
# native crash's stack trace loses the names of internal functions). Libraries that
# auditwheel vendored into *.libs/ are left as they are: they are patched in ways strip
# may not preserve, and have little to gain. Also the Python bindings of the StableHLO MLIR
# dialect (~20 MB), which only model-conversion tools import: running a SavedModel, even
# one with XlaCallModule ops, uses TensorFlow's C++ kernels. And botocore's models of the
# ~430 AWS services but S3 and those of the credential chain (STS for roles and web
# identity, SSO, sign-in): ~27 MB that s3:// base paths never load.
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
 && rm -rf "$site/tensorflow/include" \
 && rm -f "$site"/tensorflow/compiler/mlir/stablehlo/stablehlo_extension*.so \
 && find "$site" -mindepth 2 -type d -name tests -prune -exec rm -rf {} + \
 && find "$site" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.c' -o -name '*.cc' -o -name '*.cpp' \
      -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' \) -delete \
 && find "$site" -type f -name '*.so*' -not -path '*.libs/*' -exec strip --strip-unneeded {} + \
 && find "$site/botocore/data" -mindepth 1 -maxdepth 1 -type d \
      -not -name s3 -not -name sts -not -name sso -not -name sso-oidc -not -name signin -exec rm -rf {} +

COPY pyproject.toml README.md ./
COPY src ./src
# --version imports TensorFlow: a wheel that does not load fails the build, not the first start;
# so does an S3 client that cannot be made (credentials given: no lookup leaves the build).
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && pip install --no-deps . \
 && TF_CPP_MIN_LOG_LEVEL=2 pyserving --version \
 && AWS_ACCESS_KEY_ID=build AWS_SECRET_ACCESS_KEY=build AWS_EC2_METADATA_DISABLED=true python -c \
      "from pyserving.sources.stores import split_remote; split_remote('s3://bucket/m')[0].connect()"

# ---- runtime: the virtualenv and two small scripts; no compiler, no pip cache, no sources
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pyserving" \
      org.opencontainers.image.description="TensorFlow Serving, rebuilt in Python: a drop-in tensorflow_model_server" \
      org.opencontainers.image.licenses="Apache-2.0"

# tini as PID 1: forwards SIGTERM to the server and reaps children. Without an init, a
# process that is PID 1 ignores SIGTERM until it installs a handler, i.e. during the
# seconds it takes to import TensorFlow. The layer removes what apt downloaded itself,
# whatever the base image's apt configuration. uid 1000 is a regular uid (Debian's
# system range ends at 999), so the user is a regular one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 serving \
 && useradd --uid 1000 --gid serving --no-log-init --home-dir /home/serving --create-home \
      --shell /usr/sbin/nologin serving

COPY --from=build /opt/pyserving /opt/pyserving
COPY docker/entrypoint.sh /usr/bin/tf_serving_entrypoint.sh
COPY docker/healthcheck.py /usr/local/bin/pyserving-healthcheck
# TF Serving's binary path, for `docker run --entrypoint /usr/bin/tensorflow_model_server ...`.
RUN chmod 755 /usr/bin/tf_serving_entrypoint.sh /usr/local/bin/pyserving-healthcheck \
 && ln -s /opt/pyserving/bin/tensorflow_model_server /usr/bin/tensorflow_model_server

# KERAS_HOME: importing TensorFlow writes a keras.json there (its bundled legacy Keras;
# ~/.keras by default). Under /tmp, the server writes nothing else on the root filesystem,
# so `--read-only --tmpfs /tmp` changes nothing.
ENV PATH=/opt/pyserving/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    KERAS_HOME=/tmp/.keras \
    MODEL_BASE_PATH=/models \
    MODEL_NAME=model
# As TF Serving's image does: the models directory exists (mount models into it).
RUN mkdir -p "${MODEL_BASE_PATH}"

# gRPC, REST
EXPOSE 8500 8501
USER 1000:1000
WORKDIR /home/serving

HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["pyserving-healthcheck"]

# The versions pinned in docker/requirements-${TF_VARIANT}.txt, as labels for `docker
# inspect` (tests/deploy/test_image.py keeps them equal to the lock and pyproject.toml;
# `docker run --rm IMAGE --version` prints what is installed). Declared this late so that
# they key no layer above.
ARG TF_VARIANT=cpu
ARG PYSERVING_VERSION=0.1.0
ARG TENSORFLOW_VERSION=2.21.0
ARG TENSORFLOW_SERVING_API_VERSION=2.21.0
LABEL org.opencontainers.image.version="${PYSERVING_VERSION}" \
      io.pyserving.tensorflow.variant="${TF_VARIANT}" \
      io.pyserving.tensorflow.version="${TENSORFLOW_VERSION}" \
      io.pyserving.tensorflow-serving-api.version="${TENSORFLOW_SERVING_API_VERSION}" \
      io.pyserving.requirements="docker/requirements-${TF_VARIANT}.txt"

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/tf_serving_entrypoint.sh"]
