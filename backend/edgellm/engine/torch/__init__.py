"""The torch engine: transformers model code, split by contiguous layer range."""
