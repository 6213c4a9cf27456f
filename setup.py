"""ament_python build of derain_ros (and its training package, derain_training).

Works three ways: ``colcon build`` in a ROS 2 workspace, ``pip install -e .`` in the
project's own environment (``tools/setup.sh``), and a plain ``pip install .``.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "derain_ros"

# The training package lives in training/ but installs as derain_training, a name
# that cannot collide with another distribution's top-level "training" package.
training_packages = ["derain_training"] + [
    f"derain_training.{name}" for name in find_packages(where="training")
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]) + training_packages,
    package_dir={"derain_training": "training"},
    package_data={
        PACKAGE: ["py.typed", "model/weights/*.safetensors", "model/weights/*.json",
                  "model/weights/*.md"],
        "derain_training": ["py.typed"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/msg/event_camera_msgs/msg", glob("msg/event_camera_msgs/msg/*.msg")),
        (f"share/{PACKAGE}/msg/dv_ros2_msgs/msg", glob("msg/dv_ros2_msgs/msg/*.msg")),
    ],
    python_requires=">=3.10",
    # ROS packages (rclpy, message packages) are not listed: on a ROS 2 install they
    # come from the distribution (rosdep reads package.xml); in the project's own
    # environment tools/setup.sh installs the PyPI wheels from requirements/ros.txt.
    install_requires=[
        "numpy>=1.24",
        "torch>=2.3",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "safetensors>=0.4",
        "pyyaml>=6",
        "tqdm>=4.60",
        # The event codecs and voxel grids (derain_ros.events._jit): without numba they
        # run as plain Python, about 100x slower, too slow for a live event camera.
        "numba>=0.60",
    ],
    extras_require={
        "train": ["tensorboard>=2.15", "scikit-image>=0.22"],
        "sim": ["scikit-video>=1.1.11", "scikit-image>=0.22"],
        "eval": ["matplotlib>=3.7", "scikit-image>=0.22"],
        "export": ["onnx>=1.15", "onnxruntime>=1.17"],
        # derain_ros.runtime's onnxruntime back-end (onnxruntime-gpu for CUDA/TensorRT);
        # onnx for dtype int8 (onnxruntime.quantization rewrites the graph with it).
        "runtime": ["onnxruntime>=1.17", "onnx>=1.15"],
        "bench": ["evt3>=0.4", "tonic>=1.4", "rich>=13"],
        "dev": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.6"],
    },
    zip_safe=True,
    maintainer="derain_ros developers",
    maintainer_email="derain-ros@example.org",
    description="Event-guided video deraining for ROS 2: node, bag replay, training.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "derain-ros = derain_ros.cli:main",
            "derain_node = derain_ros.node:main",
            "derain_lifecycle_node = derain_ros.node:lifecycle_main",
            "derain-train = derain_training.cli:main",
        ],
    },
)
