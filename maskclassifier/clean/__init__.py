"""The owner's data cleaner, `python -m maskclassifier.clean`: a local page (127.0.0.1 only, behind a random token)
for reviewing a labelled CSV image by image. Never part of the public web app, which does not import it."""
