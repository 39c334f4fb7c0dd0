"""Mixed-supervision shard generation: paired expert/naive streams in one vLLM engine."""
