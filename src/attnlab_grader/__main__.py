import sys

from attnlab_grader.cli import main

sys.exit(main())
