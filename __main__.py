import sys

from longllava.cli import main

sys.exit(main())
