import sys

from tfrecord_tools.cli import main

sys.exit(main())
