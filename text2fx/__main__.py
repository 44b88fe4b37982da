import sys

from text2fx.cli import main

sys.exit(main())
