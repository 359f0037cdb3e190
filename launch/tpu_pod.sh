#!/usr/bin/env bash
# Train / evaluate / certify on a Cloud TPU pod slice: every worker runs the same
# command; jax.distributed.initialize() auto-detects the pod (no coordinator flags).
#
#   launch/tpu_pod.sh NAME ZONE ACCELERATOR -- ARGS...
#   launch/tpu_pod.sh rsc-v4 us-central2-b v4-32 -- --config=configs/imagenet_sewresnet34_erst.py \
#       --workdir=/mnt/shared/runs/in1k_erst --config.dataset.data_dir=/mnt/shared/tfds
#
# WORKDIR and data_dir are file-system paths every worker sees (a Filestore or gcsfuse
# mount at the same place on every worker); gs:// URLs are not supported yet.
#
# Environment: PROJECT (gcloud project, default: the configured one), VERSION (TPU VM
# runtime, default tpu-ubuntu2204-base), REPO (git URL to clone; default: copy this
# checkout with scp), PYTHON (an interpreter >= 3.11 already on every worker; default:
# install one, see below), PYVER (the Python installed then, default 3.11). The TPU VM is
# created if it does not exist and reused otherwise. Needs gcloud with the compute TPU API
# enabled.
#
# Python: the TPU VM images (tpu-ubuntu2204-base, and the v2-alpha-tpuv5/-tpuv6e images)
# are Ubuntu 22.04 with Python 3.10, while the pinned packages (requirements.txt) need
# Python >= 3.11. Unless PYTHON is given, every worker installs python$PYVER from the
# deadsnakes PPA (apt) and makes a venv ~/rsc_jax_venv, which runs everything here.
set -euo pipefail
if [ $# -lt 4 ] || [ "$4" != "--" ]; then
  echo "usage: $0 NAME ZONE ACCELERATOR -- ARGS...   (ARGS go to python -m rsc_jax.main)" >&2
  exit 2
fi
NAME=$1 ZONE=$2 ACCEL=$3; shift 4
VERSION=${VERSION:-tpu-ubuntu2204-base}
PYVER=${PYVER:-3.11}
project=()
[ -n "${PROJECT:-}" ] && project=(--project="$PROJECT")
tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" "${project[@]}"; }

if ! tpu describe "$NAME" >/dev/null 2>&1; then
  echo "creating TPU VM $NAME ($ACCEL, $VERSION) in $ZONE"
  tpu create "$NAME" --accelerator-type="$ACCEL" --version="$VERSION"
else
  echo "reusing TPU VM $NAME"
fi

here=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${REPO:-}" ]; then
  tpu ssh "$NAME" --worker=all --command="rm -rf rsc_jax_src && git clone --depth 1 '$REPO' rsc_jax_src"
else
  tar -C "$here" --exclude=runs --exclude=.git -czf /tmp/rsc_jax_src.tgz .
  tpu scp /tmp/rsc_jax_src.tgz "$NAME":rsc_jax_src.tgz --worker=all
  tpu ssh "$NAME" --worker=all --command="rm -rf rsc_jax_src && mkdir rsc_jax_src && tar -xzf rsc_jax_src.tgz -C rsc_jax_src"
fi
if [ -z "${PYTHON:-}" ]; then
  PYTHON='$HOME/rsc_jax_venv/bin/python'   # expanded on the workers
  apt='sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q'
  tpu ssh "$NAME" --worker=all --command="set -e; if ! command -v python$PYVER >/dev/null; then \
    sudo add-apt-repository -y ppa:deadsnakes/ppa && $apt update \
    && $apt install -y python$PYVER python$PYVER-venv; fi; [ -x $PYTHON ] || python$PYVER -m venv \$HOME/rsc_jax_venv"
fi
# TPU wheels of the pinned jax version; the rest from requirements.txt.
tpu ssh "$NAME" --worker=all --command="cd rsc_jax_src \
  && $PYTHON -c 'import sys; assert sys.version_info >= (3, 11), \"Python >= 3.11 needed, not \" + sys.version' \
  && $PYTHON -m pip install -q -U pip && $PYTHON -m pip install -q -r requirements.txt \
  && $PYTHON -m pip install -q 'jax[tpu]==0.10.2'"
quoted=$(printf ' %q' "$@")
tpu ssh "$NAME" --worker=all --command="cd rsc_jax_src && $PYTHON -m rsc_jax.main$quoted"
