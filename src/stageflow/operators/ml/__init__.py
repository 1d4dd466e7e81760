"""The ML operators, registered lazily in ``operators.registry`` (see ``_common``)."""
