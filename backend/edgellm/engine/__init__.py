"""Engines: what turns a request into tokens. Pick one by name via `edgellm.engine.registry`."""
