"""A second ROS process for the interface tests: echoes messages back.

Subscribes to ``/derain_test/in/{image,events,event_array}`` and republishes each
message unchanged on ``/derain_test/out/...``. Runs until killed or ``--seconds``
pass. Started by the tests with :func:`conftest.ros_env`, so DDS stays on loopback.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()

    import rclpy
    from dv_ros2_msgs.msg import EventArray
    from event_camera_msgs.msg import EventPacket
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("derain_test_echo")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for name, msg_type in (("image", Image), ("events", EventPacket), ("event_array", EventArray)):
        pub = node.create_publisher(msg_type, f"/derain_test/out/{name}", qos)
        node.create_subscription(msg_type, f"/derain_test/in/{name}",
                                 lambda msg, pub=pub: pub.publish(msg), qos)
    print("echo ready", flush=True)
    end = time.monotonic() + args.seconds
    try:
        while rclpy.ok() and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
