#!/bin/bash
# EMR bootstrap action: runs on every node (master, core, task) before
# Hadoop and Spark start. Installs the packaged code and its Python
# dependencies into a virtual environment that spark-env's PYSPARK_PYTHON
# points at. The dependencies come only from the wheelhouse the deploy
# uploaded (pip --no-index): no node reaches PyPI, so a spot replacement
# starts the same way on the day PyPI is slow or a wheel is yanked.
#
#   bootstrap.sh --code s3://BUCKET/code/image-tagger-HASH.tar.gz \
#                --wheelhouse s3://BUCKET/code/wheelhouse-HASH/ \
#                [--install-dir /opt/image-tagger] [--python python3.11] [--gpu]
#
# The wheelhouse holds the profile's runtime, chosen at deploy (infra/scripts/node_env.py):
# LiteRT only, or TensorFlow (with CUDA for a GPU profile) too. --gpu (GPU instance types)
# makes Spark's GPU discovery script executable.
set -euo pipefail

code_uri=""
wheelhouse_uri=""
install_dir="/opt/image-tagger"
python_bin="python3.11"
gpu=0

while [ $# -gt 0 ]; do
  case "$1" in
    --code) code_uri="$2"; shift 2 ;;
    --wheelhouse) wheelhouse_uri="$2"; shift 2 ;;
    --install-dir) install_dir="$2"; shift 2 ;;
    --python) python_bin="$2"; shift 2 ;;
    --gpu) gpu=1; shift ;;
    *) echo "bootstrap: unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [ -z "$code_uri" ] || [ -z "$wheelhouse_uri" ]; then
  echo "bootstrap: --code s3://... and --wheelhouse s3://.../ are required" >&2
  exit 2
fi

log() { echo "bootstrap: $(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }
# EMR runs bootstrap actions as the hadoop user with password-less sudo; as root, no sudo.
sudo=$([ "$(id -u)" = 0 ] || echo sudo)

# EMR 7.x (Amazon Linux 2023) ships python3.11 beside the system python3.9;
# install it if an AMI lacks it.
if ! command -v "$python_bin" >/dev/null 2>&1; then
  log "installing $python_bin"
  $sudo dnf install -y "$python_bin" "$python_bin-pip"
fi

$sudo mkdir -p "$install_dir"
$sudo chown "$(id -u):$(id -g)" "$install_dir"

log "fetching $code_uri"
aws s3 cp --only-show-errors "$code_uri" "$install_dir/code.tar.gz"
tar -xzf "$install_dir/code.tar.gz" -C "$install_dir"
rm -f "$install_dir/code.tar.gz"

log "fetching the wheelhouse $wheelhouse_uri"
aws s3 cp --only-show-errors --recursive "${wheelhouse_uri%/}/" "$install_dir/wheelhouse"
if [ "$gpu" = 1 ]; then
  chmod a+x "$install_dir"/conf/spark/*.sh  # Spark's GPU discovery script
fi

log "creating virtual environment with $python_bin"
"$python_bin" -m venv "$install_dir/venv"
# Only the uploaded wheels: no index, whatever pip configuration the image carries.
install="$install_dir/venv/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-index --find-links $install_dir/wheelhouse"
started=$(date +%s)
$install --upgrade pip setuptools wheel

# requirements-node.txt: every wheel of the runtime, pinned (the cluster brings its own pyspark).
runtime=$("$python_bin" -c 'import json, sys; print(json.load(open(sys.argv[1]))["runtime"])' "$install_dir/wheelhouse/node-env.json")
log "installing the $runtime runtime from the wheelhouse"
$install -r "$install_dir/wheelhouse/requirements-node.txt"

log "installing the project's packages (jobs, model)"
$install --no-deps --no-build-isolation "$install_dir"
log "installed in $(( $(date +%s) - started ))s, $(du -sh "$install_dir/venv" | cut -f1) on disk"
rm -rf "$install_dir/wheelhouse"

# The Spark and YARN users run the job: give them read access.
$sudo chmod -R a+rX "$install_dir"
log "done: $("$install_dir/venv/bin/python" --version) in $install_dir/venv"
