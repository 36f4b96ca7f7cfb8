"""GPU benchmark: one command on a machine with an NVIDIA GPU (see run.sh)."""
