"""Job kinds this agent knows, by name. A node runs only the ones its config lists in ``jobs.kinds`` (and the
``[[jobs.template]]`` tables it defines)."""

from nodeagent.jobs.kind import JobKind
from nodeagent.jobs.kinds.distcc import DistccKind
from nodeagent.jobs.kinds.hpl_kind import HplKind
from nodeagent.jobs.kinds.llm import DllamaKind, LlamaBenchKind, LlamaRpcKind
from nodeagent.jobs.kinds.stress import StressKind

KINDS: dict[str, JobKind] = {
    "hpl": HplKind(),
    "stress": StressKind(),
    "llama-bench": LlamaBenchKind(),
    "llama-rpc": LlamaRpcKind(),
    "dllama": DllamaKind(),
    "distcc": DistccKind(),
}
