# Shared settings for the TPU scripts; override any of them in the environment.
: "${TPU_NAME:=jaxwhisper}"
: "${ZONE:=us-central2-b}"
: "${ACCELERATOR_TYPE:=v4-32}"
: "${RUNTIME_VERSION:=tpu-ubuntu2204-base}"
: "${REPO_URL:?set REPO_URL to a git URL of this repository that the TPU VMs can clone}"
: "${REPO_REF:=main}"
