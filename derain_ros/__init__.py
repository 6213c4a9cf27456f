"""derain_ros: event-guided video deraining for ROS 2.

The core (events, sync, model, engine, sim, eval) is plain Python, numpy and torch;
only ``derain_ros.node`` and ``derain_ros.ros`` import rclpy and message packages.
"""

__version__ = "0.1.0"
