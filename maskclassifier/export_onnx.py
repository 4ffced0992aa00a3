"""`python -m maskclassifier.export_onnx`: the re-export command, kept at this name
(see maskclassifier.modelfiles.export_onnx)."""

import sys

from maskclassifier.modelfiles.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
