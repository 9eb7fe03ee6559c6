#!/usr/bin/env bash
# One W&B sweep agent per GPU: scripts/launch_agents.sh ENTITY/PROJECT/SWEEP_ID 0,1,2,3 [--count N]
# Starts are staggered: agents that start together can be handed the same first configuration.
# Ctrl-C stops every agent.
set -euo pipefail
sweep=${1:?usage: launch_agents.sh SWEEP_ID GPU_IDS [wandb agent options]}
gpus=${2:?usage: launch_agents.sh SWEEP_ID GPU_IDS (e.g. 0,1,2,3) [wandb agent options]}
shift 2
stagger=${SUMSWEEP_AGENT_STAGGER:-5}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait; exit 130' INT TERM
IFS=, read -ra ids <<<"$gpus"
# A GPU the driver does not list leaves its agent no GPU, and it would train on the CPU without a word.
listed=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
for id in "${ids[@]}"; do
  if [ -z "$id" ]; then
    echo "error: GPU_IDS '$gpus' has an empty entry; list GPU indices like 0,1" >&2; exit 2
  elif [[ "$id" =~ ^[0-9]+$ ]] && [ "${listed:-0}" -gt 0 ] && [ "$id" -ge "$listed" ]; then
    echo "error: GPU $id: this machine has $listed GPU(s), 0 to $((listed - 1)) (nvidia-smi -L lists them); name those" >&2
    exit 2
  fi
done
for i in "${!ids[@]}"; do
  [ "$i" -gt 0 ] && sleep "$stagger"
  CUDA_VISIBLE_DEVICES=${ids[$i]} wandb agent "$@" "$sweep" 2>&1 | sed -u "s/^/[gpu ${ids[$i]}] /" &
  pids+=($!)
done
wait
