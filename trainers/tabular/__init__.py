"""Tabular policy optimisation with exact evaluation: the theory papers' update rules on small MDPs.

Eight methods (projected PG, projected Q-ascent, softmax PG and NPG, entropy-regularised softmax PG and
NPG, soft policy iteration, Hadamard PG) run on an explicit, random (Garnet) or named MDP, logging the
optimality gap every iteration. ``python -m trainers.tabular --config cfg.json`` runs one from the
command line; ``trainers.tabular.spec`` registers it with the platform as kind "tabular".

Importing this package imports nothing else (the web app imports ``spec`` and ``config`` only).
"""
