"""What the DDS transport allows: the shared-memory segment of the Fast DDS profile.

The loopback profile (``config/fastdds_localhost.xml``) sends large messages through a
shared-memory segment of ``segment_size`` bytes (32 MB there). A message larger than the
segment does not fit it: Fast DDS drops it without an error on either side, so a frame
over the limit simply never arrives. Neither publisher nor subscriber can see that
happen; what the node can do is compare, at start-up, the largest frame it accepts
(``max_frame_pixels`` in the widest encoding) with the segment and warn, and count the
outputs it publishes over the limit. How to raise the limit: ``docs/recovery.md``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from derain_ros.images import ENCODINGS

__all__ = ["MESSAGE_OVERHEAD_BYTES", "max_encoded_bytes", "shm_segment_bytes"]

#: Bytes a sensor_msgs/Image adds to its pixels (header, encoding, CDR framing), rounded up.
MESSAGE_OVERHEAD_BYTES = 4096


def max_encoded_bytes(pixels: int) -> int:
    """Bytes of the largest ``sensor_msgs/Image`` of ``pixels`` px in any encoding."""
    per_pixel = max(spec.channels * spec.dtype().itemsize for spec in ENCODINGS.values())
    return int(pixels) * per_pixel + MESSAGE_OVERHEAD_BYTES


def shm_segment_bytes(profile: str | Path | None = None) -> int | None:
    """The SHM ``segment_size`` (bytes) of the Fast DDS profile in use.

    ``profile``: the XML file; by default ``$FASTDDS_DEFAULT_PROFILES_FILE``. None when
    there is no profile, it cannot be read, or it has no SHM transport with a size (then
    Fast DDS's own default applies, 512 kB per segment in its built-in transport).
    """
    path = profile or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
    if not path:
        return None
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    sizes = []
    for desc in root.iter():
        if not desc.tag.endswith("transport_descriptor"):
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in desc}
        if fields.get("type") == "SHM" and fields.get("segment_size", "").isdigit():
            sizes.append(int(fields["segment_size"]))
    return min(sizes) if sizes else None
