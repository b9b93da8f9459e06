"""Test and demo models: tiny random-weight VLMs built locally (:mod:`common.tiny.builder`).

No runtime module imports this package: :func:`common.model_refs.resolve_model` imports the
builder only for a ``tiny:`` reference, and ``imagenet-think tiny-model`` builds one on request.
"""
