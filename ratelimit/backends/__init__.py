"""The stores of shared limit state, laid out like ``django.core.cache.backends``: the interface
(:mod:`~ratelimit.backends.base`) and one module per backend (:mod:`~ratelimit.backends.memory`,
:mod:`~ratelimit.backends.redis`, whose scripts are in ``lua/``)."""
