"""The thin ROS 2 layer: the perception node, message conversion and the demo. Imports rclpy."""
