import sys

from awp.cli import main

sys.exit(main())
