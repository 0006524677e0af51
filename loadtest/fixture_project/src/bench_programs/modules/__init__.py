"""One program per file; each class name is its route (``POST /SimplePredict``, ...)."""
