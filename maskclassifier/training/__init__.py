"""The training layer: train a learner on a labelled CSV, score a labelled set as the app answers, report on it.

It shares the classifier layer with the web app and never imports the web app. The commands are
`python -m maskclassifier.train` and `python -m maskclassifier.evaluate` (or mask-train and mask-evaluate).
"""
