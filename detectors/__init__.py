"""Person detectors behind one interface: Ultralytics YOLO (any export format) and OpenCV HOG."""

from detectors.base import Detections, Detector
from detectors.factory import DetectorError, build_detector

__all__ = ["Detections", "Detector", "DetectorError", "build_detector"]
