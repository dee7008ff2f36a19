"""``python -m puller``."""
from .cli import main

main()
