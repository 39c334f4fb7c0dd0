"""Fine-tuning on generated shards with a plain PyTorch loop. Never imports vLLM."""
