import sys

from engine.dataprep.cli import main

sys.exit(main())
