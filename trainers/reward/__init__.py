"""Bradley-Terry reward models (Skywork-Reward, arXiv 2410.18451): kind "reward".

* ``config``: RewardConfig (no torch); ``spec``: the registration and presets;
* ``train``: the training loop; ``model``: the reward model and its checkpoints; ``losses``: the loss;
* ``score``: scoring pairs with a checkpoint; ``rewardbench``: RewardBench v1 section scores.

Its demo pairs come from trainers.common.demo_data (shared with the demo seeding and the tests).

Run standalone with ``python -m trainers.reward --config cfg.yaml``.
"""
