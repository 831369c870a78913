"""Preference-data curation: a recipe (an ordered list of steps) applied to a preference dataset
makes a new version of it in which every pair of the source is present, marked kept or dropped with
a reason. ``recipes`` validates recipes, ``steps`` holds the pure step functions, ``service`` runs a
recipe against the database."""
