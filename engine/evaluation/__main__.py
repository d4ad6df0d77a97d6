import sys

from engine.evaluation.cli import main

sys.exit(main())
