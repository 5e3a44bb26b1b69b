#!/usr/bin/env bash
# Installed as /usr/bin/tf_serving_entrypoint.sh, the path of TF Serving's script, with
# the same contract (tools/docker/Dockerfile of tensorflow/serving):
#   tensorflow_model_server --port=8500 --rest_api_port=8501 \
#     --model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"
# Container arguments are appended, and a later flag wins, so `docker run IMAGE --port=9000`
# or `... --model_config_file=/models/models.config` override the defaults above.
#
# One difference: `exec`. The server replaces this shell, so `docker stop` / a Kubernetes
# pod deletion delivers SIGTERM to the server itself, which drains requests in flight
# (--shutdown_grace_seconds) and exits 0. TF Serving's script keeps bash in between, which
# does not forward the signal: the container waits out its grace period and is killed
# (tensorflow/serving issue #1853).
set -euo pipefail

#
# --model_base_path_allowlist (pyserving's own): a HandleReloadConfigRequest may point models
# only under MODEL_BASE_PATH, the models' mount (a later `--model_base_path_allowlist=` lifts it).
#
# PYSERVING_WORKERS=N (pyserving's own) adds --workers=N: N worker processes on the same
# ports (0: one per core the container may use); unset, one process as TF Serving runs.
MODEL_NAME="${MODEL_NAME:-model}"
MODEL_BASE_PATH="${MODEL_BASE_PATH:-/models}"

exec tensorflow_model_server \
  --port=8500 \
  --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" \
  --model_base_path="${MODEL_BASE_PATH%/}/${MODEL_NAME}" \
  --model_base_path_allowlist="${MODEL_BASE_PATH%/}" \
  ${PYSERVING_WORKERS:+"--workers=${PYSERVING_WORKERS}"} \
  "$@"
