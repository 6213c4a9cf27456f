"""Programs that tests start as separate ROS processes (a real second DDS participant)."""
