import sys

from hades.train.cli import main

sys.exit(main())
