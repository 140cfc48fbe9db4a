"""cde_ros: causal delta embeddings that tell a robot what its own manipulation did.

`cde_ros.core` is ROS-free (model, losses, pairing, images, bags, training, evaluation,
synthetic scenes); `cde_ros.ros` is the thin rclpy layer (node, message conversion, demo).
"""

__version__ = "0.1.0"
