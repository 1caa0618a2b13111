#!/bin/bash
# Example SLURM job: train the VQGAN (or the transformer) on several nodes with Lightning's DDP.
#
# Lightning detects SLURM by itself (SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, SLURM_NODELIST): srun
# starts ONE task per GPU and Lightning maps each task to a rank, so
#   --ntasks-per-node  == --gpus-per-node == the script's --devices
#   --nodes            == the script's --num_nodes
# must agree (Lightning refuses mismatches). Submit with: sbatch scripts/slurm_train.sh
# Rerunning / requeueing the job resumes from the newest checkpoint in --default_root_dir/checkpoints
# (written atomically every --ckpt_every_n_steps steps), so at most that many steps are redone.
#
#SBATCH --job-name=tats-vqgan
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --mem=0
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out

set -euo pipefail

NODES=${SLURM_JOB_NUM_NODES:-2}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
DATA=${DATA:-/path/to/ucf101}         # dataset (see README "Data")
RUN=${RUN:-runs/vqgan_ucf101}         # checkpoints + TensorBoard logs; reruns resume from here

# Lightning's SLURM environment handles the rendezvous (MASTER_ADDR from the node list, a port derived
# from the job id); NCCL settings only where your cluster needs them, e.g.:
# export NCCL_SOCKET_IFNAME=ib0
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-8}

# --sync_batchnorm: batch statistics over all GPUs (the release's setting); --num_workers is per GPU.
srun python train_vqgan.py \
    --config configs/ucf101.yaml \
    --data_path "$DATA" --default_root_dir "$RUN" \
    --accelerator gpu --devices "$GPUS_PER_NODE" --num_nodes "$NODES" --strategy ddp \
    --sync_batchnorm --precision bf16 \
    --batch_size 2 --num_workers "$OMP_NUM_THREADS" \
    --ckpt_every_n_steps 3000 --progress_bar_refresh_rate 500

# Stage 2 the same way (one task per GPU), e.g.:
# srun python train_transformer.py --vqvae "$RUN/checkpoints/last.ckpt" --data_path "$DATA" \
#     --default_root_dir runs/gpt_ucf101 --accelerator gpu --devices "$GPUS_PER_NODE" \
#     --num_nodes "$NODES" --strategy ddp --batch_size 3 --block_size 1024 --n_layer 24 --n_head 16 \
#     --n_embd 1024 --resolution 128 --sequence_length 16 --max_steps 2000000
