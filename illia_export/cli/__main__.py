import sys

from illia_export.cli import main

sys.exit(main())
