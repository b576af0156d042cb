"""The launch log (csrc/launch_log.h) read back: which kernel variant a call ran.

Each entry is "<file>: <launching function>" with the function as the
compiler's __PRETTY_FUNCTION__ writes it, e.g. (GCC)

    dice_stats_thread_kernel.cu: at::Tensor fastdice::cuda::{anonymous}::launch_per_thread(...)
        [with scalar_t = float; acc_t = float; fastdice::Activation kAct = fastdice::Activation::kSoftmax; ...]

nvcc's front end writes the template arguments as "[with scalar_t=float, ...]";
the parser reads both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NAME = re.compile(r"([A-Za-z_]\w*)\s*(?:<[^()]*>)?\s*\(")
_ARG = re.compile(r"([A-Za-z_]\w*)\s*=\s*([^,;\]]+)")


@dataclass(frozen=True)
class Launch:
    file: str
    launcher: str  # the host function that launched the kernel
    params: dict = field(hash=False)  # its template arguments: name -> value ("float", "kSoftmax", "true")

    def matches(self, launcher: str, **params) -> bool:
        return self.launcher == launcher and all(self.params.get(k) == str(v).lower() if isinstance(v, bool)
                                                 else self.params.get(k) == v for k, v in params.items())

    def __str__(self) -> str:
        return f"{self.launcher}[{', '.join(f'{k}={v}' for k, v in self.params.items())}]"


def parse(entry: str) -> Launch:
    file, _, pretty = entry.partition(": ")
    head, _, with_args = pretty.partition("[with ")
    # The function's own name: the identifier before the parameter list's "(".
    names = _NAME.findall(head)
    if not names:
        raise ValueError(f"launch log entry without a function name: {entry!r}")
    params = {}
    for name, value in _ARG.findall(with_args):
        value = value.strip().rsplit("::", 1)[-1]  # fastdice::Activation::kSoftmax -> kSoftmax, c10::Half -> Half
        params[name] = value
    return Launch(file, names[0], params)


def parse_all(entries) -> list[Launch]:
    return [parse(e) for e in entries]
