"""Using a trained or compiled model: ``predict``, ``evaluate``, ``generate`` (see docs/serve.md).

A *target* is either a ``graphc compile`` folder (run in onnxruntime; ``predict`` and
``generate`` then import no torch) or a spec file with ``weights=`` (run in torch).  The
functions are ``graphc.predict``, ``graphc.evaluate`` and ``graphc.generate``; the modules
here are ``readers`` (input files), ``backends`` (where the model runs), one module per
command, and ``commands`` (the CLI).
"""
