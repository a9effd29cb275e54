# shellcheck shell=bash
# Sourced by jobs/train_gpu.sbatch and jobs/scaling_gpu.sbatch: the settings of a GPU run.
#
# One rank per GPU, or per GPU pair with GPUS_PER_RANK=2 (train --gpus-per-rank 2: the UNet on GPU 2r
# of local rank r, the text encoder on GPU 2r+1, as the Ray example's workers; submit half as many tasks
# per node as GPUs, e.g. --ntasks-per-node=4 --gres=gpu:8, every GPU of the node visible to every task).
# With one GPU per rank each rank takes device (local rank mod visible devices) (src/backend/device.cpp):
# with every GPU of the node visible to every task that is one GPU each; with SRUN_ARGS=--gpus-per-task=1
# (sites whose job steps do not see the job's GPUs) each task sees one device and takes it.
# Gradients go over NCCL (src/dist/nccl_communicator.cpp, chosen automatically for > 1 rank on CUDA;
# DREAMBOOTH_COMM=mpi falls back to MPI through host memory).
#
# NCCL settings (environment; defaults are NCCL's own unless set here):
#   NCCL_DEBUG=WARN (set here; INFO prints the topology, the rings/trees and the transport per peer:
#     the first thing to read when a multi-GPU run is slow: NVLink (P2P/CUMEM) within a node,
#     NET/IB between nodes, never NET/Socket on an InfiniBand cluster)
#   NCCL_IB_HCA: the InfiniBand adapters to use, e.g. mlx5_0,mlx5_1 (unset: all that NCCL finds);
#     ^mlx5_2 excludes one. Set it when the node has management or storage HCAs.
#   NCCL_SOCKET_IFNAME: the interface of the bootstrap and of the socket transport, e.g. ib0 or
#     eth0 (unset: NCCL picks one, sometimes a docker or virtual bridge: ^lo,docker excludes)
#   NCCL_ASYNC_ERROR_HANDLING / NCCL_TIMEOUT are PyTorch's, not NCCL's: a failing rank here ends the
#     job through MPI_Abort (DESIGN.md decision 15).
# DATA_PREFIX must be on storage every node sees (shards, checkpoints and the output are read and
# written there by every rank).
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# --device cuda: fail at start rather than train on the CPU when a node has no usable GPU.
TRAIN_ARGS="--device cuda ${TRAIN_ARGS:-}"
GPUS_PER_RANK=${GPUS_PER_RANK:-1}
case $GPUS_PER_RANK in
  1) ;;
  2) TRAIN_ARGS="--gpus-per-rank 2 $TRAIN_ARGS" ;;
  *) echo "GPUS_PER_RANK must be 1 or 2 (got $GPUS_PER_RANK)" >&2; exit 2 ;;
esac
tasks_per_node=${SLURM_NTASKS_PER_NODE:-}
tasks_per_node=${tasks_per_node%%[(]*}  # "4(x2)" on heterogeneous allocations
if [ -n "$tasks_per_node" ] && [ -n "${SLURM_GPUS_ON_NODE:-}" ] &&
  [ $((tasks_per_node * GPUS_PER_RANK)) -gt "$SLURM_GPUS_ON_NODE" ]; then
  echo "$SLURM_NTASKS_PER_NODE tasks per node x GPUS_PER_RANK=$GPUS_PER_RANK need more than the node's $SLURM_GPUS_ON_NODE GPUs" >&2
  exit 2
fi
export TRAIN_ARGS GPUS_PER_RANK
JOBS_DIR=${JOBS_DIR:-${SLURM_SUBMIT_DIR:-.}/jobs}
