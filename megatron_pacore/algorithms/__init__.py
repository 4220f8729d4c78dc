"""algorithms: PPO's math as pure tensor functions (no process groups, no models).

gae.py         GAE advantages and returns, reward placement, whitening
losses.py      clipped policy and value losses, KL and entropy terms, global token aggregation
importance.py  truncated importance weights for the vLLM-vs-Megatron log-prob mismatch
ppo.py         PPOConfig and the actor/critic objectives composed from the above
"""
