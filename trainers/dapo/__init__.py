"""DAPO: Direct Advantage Policy Optimization (arXiv 2412.18279), step-level offline RL."""
