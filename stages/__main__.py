"""``python -m stages <stage> <module[:function]> name=path ...``: run one stage as dvc.yaml does."""

from lmpipe.contract import main

main()
