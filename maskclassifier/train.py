"""`python -m maskclassifier.train`: the training command, kept at this name (see maskclassifier.training.train)."""

import sys

from maskclassifier.training.train import main

if __name__ == "__main__":
    sys.exit(main())
