"""jal-deploy runtime: segment images, videos and datasets with an exported JAL+WTM model.

Never imports torch or the training code at import time (a driving stack embeds this package).
"""
__version__ = "0.1.0"
