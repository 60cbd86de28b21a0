"""The vLLM engine: whole models served by vLLM's async engine (continuous batching)."""
