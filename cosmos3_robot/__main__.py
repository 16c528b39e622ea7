import sys

from cosmos3_robot.cli import main

sys.exit(main())
