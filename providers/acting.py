"""A dynamic provider whose create and update do the same work, on the nodes or the host, and
record what it found; deleting its resource leaves what it did in place.

Re-imported by Pulumi's dynamic-provider process: imports cleanly, creates nothing.
"""

from __future__ import annotations

from typing import Any

from pulumi.dynamic import CreateResult, ResourceProvider, UpdateResult


class ActingProvider(ResourceProvider):
    """Subclasses name the resource's id and define `act` (and `diff`, which decides when it acts again)."""

    resource_id: str

    def act(self, props: dict[str, Any]) -> dict[str, Any]:
        """The outputs: the inputs and what the work found."""
        raise NotImplementedError

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=self.resource_id, outs=self.act(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.act(news))
