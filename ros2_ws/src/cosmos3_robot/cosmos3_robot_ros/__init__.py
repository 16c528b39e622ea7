"""ROS 2 (rclpy) transport of the cosmos3-robot policy node; the logic is in cosmos3_robot.runtime."""
