"""jal-deploy runtime: segment images, videos and datasets with an exported JAL+WTM model.

Never imports torch or the training code at import time (a driving stack embeds this package).

    from jal_deploy import Segmenter
    seg = Segmenter.from_path("models/jal-wtm-ssl-synthetic-r18.onnx")
"""
__version__ = "0.1.0"
__all__ = ["Segmenter", "__version__"]


def __getattr__(name):  # lazy: `import jal_deploy` stays cheap for the label tables and dataset readers
    if name == "Segmenter":
        from jal_deploy.segmenter import Segmenter
        return Segmenter
    raise AttributeError(f"module 'jal_deploy' has no attribute {name!r}")
