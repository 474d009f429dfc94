"""Operator families: each module registers its operators in kql.registry when imported."""
