"""Face-mask classifier: a fastai multi-label image classifier, its web app and its training commands.

Importing the package imports nothing else: `maskclassifier.web` is the Flask app (`create_app`), the
`maskclassifier.train`, `evaluate`, `export_onnx` modules are the training commands. The README's "Code map"
lists every module and the layers they form.
"""
