"""The ROS-free core of cde_ros. Nothing under this package imports rclpy or launch."""
