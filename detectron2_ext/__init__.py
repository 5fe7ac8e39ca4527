"""detectron2 extension: the 3D-AFF-ResNet(-FPN) backbone for Faster R-CNN and Mask R-CNN."""
