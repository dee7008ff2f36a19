"""Run puller from a checkout: ``python puller.py -d -node=box-1 -dir=examples/services``."""
from puller.cli import main

main()
