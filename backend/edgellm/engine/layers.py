"""A stage's contiguous range of a model's decoder layers.

Its own module, free of torch: plans and the backend's request messages name layer ranges,
and the backend serves its first requests before torch and transformers are imported
(edgellm.warm)."""

from __future__ import annotations

from dataclasses import dataclass

from edgellm.errors import InvalidRequest


@dataclass(frozen=True)
class LayerRange:
    start: int  # first layer, inclusive
    end: int  # last layer, exclusive

    def validate(self, num_layers: int) -> None:
        if not 0 <= self.start < self.end <= num_layers:
            raise InvalidRequest(
                f"layer range [{self.start}, {self.end}) must lie within [0, {num_layers})"
            )
