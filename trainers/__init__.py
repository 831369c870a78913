"""Trainers: pure PyTorch/NumPy, no Django. Each talks to the world only through a Sink (see base.py)."""
