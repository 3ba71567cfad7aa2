import sys

from privreid.cli import main

sys.exit(main())
