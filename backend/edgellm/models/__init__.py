"""Known models and the content-addressed model store."""
