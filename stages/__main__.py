"""``python -m stages <stage> <module[:function]> name=path ...``: run one stage as dvc.yaml does.

``python -m stages <stage>`` alone takes the entry and paths from the registry (for launchers such as
``infra/cluster``, which run one stage outside DVC).
"""

import sys

from lmpipe.contract import main

args = sys.argv[1:]
if len(args) == 1 and not args[0].startswith("-"):
    from stages.registry import by_name

    stage = by_name().get(args[0])
    if stage is None:
        sys.exit(f"unknown stage {args[0]!r}; stages: {', '.join(by_name())}")
    args = [stage.name, stage.entry, *(f"{k}={v}" for k, v in stage.io().items())]
main(args)
