"""cde_ros: causal delta embeddings that tell a robot what its own manipulation did.

Packages, each importing only those listed before it:

- `core`: the ground floor (action vocabulary, pair sets, stamps, images, preprocessing, paths);
- `data`: recordings and pairing (rosbag2 reading and writing, snapshot buffer, events);
- `model`: the causal delta model, its losses, the `none` operating point, inference;
- `synthetic`, `sim`: scene generators (2D procedural scenes; the MuJoCo household simulator);
- `training`: the training loop, evaluation, benchmarks;
- `ros`: the thin rclpy layer (node, message conversion, demo). Only it imports rclpy.
"""

__version__ = "0.1.0"
