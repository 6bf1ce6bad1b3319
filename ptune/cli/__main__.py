"""`python -m ptune.cli ...` (what dvc.yaml's stages run): the same as the `ptune` console script."""

from ptune.cli import main

main()
