"""derain_training: fine-tunes the derain_ros network on recorded rosbags.

Installed as ``derain_training`` (from the ``training/`` folder) so that its name
cannot collide with another distribution's ``training`` package. It reads bags
through the same decode/sync/voxel code as the node (``derain_ros``).
"""
