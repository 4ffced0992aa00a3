"""`python -m maskclassifier.evaluate`: the evaluation command, kept at this name
(see maskclassifier.training.evaluate)."""

import sys

from maskclassifier.training.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
