"""course_lib: the small, tested PyTorch library behind the open course on generative models.

Modules mirror the chapters (``info``, ``markov``, ``vi``, ``vae``, ...) plus the shared
core: ``config`` (run profile, budgets, device, seeding), ``data``, ``train``, ``plotting``
and ``provenance``. Importing the package does nothing but import: no downloads, no prints.
"""

__version__ = "0.1.0"
