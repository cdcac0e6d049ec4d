"""Job kinds this agent knows, by name. A node runs only the ones its config lists in ``jobs.kinds``."""

from nodeagent.jobs.kind import JobKind
from nodeagent.jobs.kinds.hpl_kind import HplKind

KINDS: dict[str, JobKind] = {"hpl": HplKind()}
