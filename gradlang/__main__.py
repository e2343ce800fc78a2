"""`python -m gradlang …` runs the same command line as `gradlang …`."""
import sys

from .cli import main

sys.exit(main())
