import sys

from mobilenet.cli.main import main

sys.exit(main())
