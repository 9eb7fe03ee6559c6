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
for i in "${!ids[@]}"; do
  [ "$i" -gt 0 ] && sleep "$stagger"
  CUDA_VISIBLE_DEVICES=${ids[$i]} wandb agent "$@" "$sweep" 2>&1 | sed -u "s/^/[gpu ${ids[$i]}] /" &
  pids+=($!)
done
wait
