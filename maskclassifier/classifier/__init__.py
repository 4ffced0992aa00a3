"""The classifier layer: loading model files, the backends, the pipeline, faces, drawing and heat-maps.

Importing it hides exactly torch's "torch.jit.script is deprecated" FutureWarning, which fastai triggers when it is
imported (by the fastai backend, at every start of the full install); every other warning still shows.
"""

from maskclassifier.core.cli import silence_fastai_jit_warning

silence_fastai_jit_warning()
