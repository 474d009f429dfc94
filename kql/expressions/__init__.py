"""Scalar expression families: each module registers its syntax forms in kql.registry when imported."""
