#!/bin/bash
# EMR bootstrap action: runs on every node (master, core, task) before
# Hadoop and Spark start. Installs the project's pinned Python dependencies
# and the packaged code into a virtual environment that spark-env's
# PYSPARK_PYTHON points at.
#
#   bootstrap.sh --code s3://BUCKET/code/image-tagger-HASH.tar.gz \
#                [--install-dir /opt/image-tagger] [--python python3.11] [--gpu]
#
# --gpu (GPU instance types): TensorFlow with CUDA instead of tensorflow-cpu, same version.
set -euo pipefail

code_uri=""
install_dir="/opt/image-tagger"
python_bin="python3.11"
gpu=0

while [ $# -gt 0 ]; do
  case "$1" in
    --code) code_uri="$2"; shift 2 ;;
    --install-dir) install_dir="$2"; shift 2 ;;
    --python) python_bin="$2"; shift 2 ;;
    --gpu) gpu=1; shift ;;
    *) echo "bootstrap: unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [ -z "$code_uri" ]; then
  echo "bootstrap: --code s3://... is required" >&2
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

log "creating virtual environment with $python_bin"
"$python_bin" -m venv "$install_dir/venv"
pip="$install_dir/venv/bin/python -m pip"
$pip install --quiet --upgrade pip

# The cluster brings its own Spark (spark-submit puts EMR's pyspark first on
# the workers' PYTHONPATH), so the pyspark pin is not installed on the nodes.
grep -viE '^[[:space:]]*pyspark([[:space:]=<>!~;[]|$)' "$install_dir/requirements.txt" > "$install_dir/requirements-node.txt"
if [ "$gpu" = 1 ]; then
  sed -i -E 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' "$install_dir/requirements-node.txt"
  chmod a+x "$install_dir"/conf/spark/*.sh  # Spark's GPU discovery script
fi

log "installing pinned dependencies"
$pip install --quiet --no-cache-dir -r "$install_dir/requirements-node.txt"

log "installing the project's packages (jobs, model)"
$pip install --quiet --no-cache-dir --no-deps "$install_dir"

# The Spark and YARN users run the job: give them read access.
$sudo chmod -R a+rX "$install_dir"
log "done: $("$install_dir/venv/bin/python" --version) in $install_dir/venv"
