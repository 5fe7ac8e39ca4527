"""The detection comparison of the paper's section 4.5 in miniature: one detector, five backbones.

    python -m detectron2_ext.compare --seeds 2 --jobs 2          # Mask R-CNN with R50 / SE / CBAM / ECA / 3D-AFF
    python -m detectron2_ext.compare --report-only               # rewrite results.md from results.json

Every run trains ``configs/shapes/<detector>_<backbone>_FPN_shapes.yaml`` (the five configs of a
detector differ in ``MODEL.AFF3D.ATTENTION`` only) with one seed, in its own process
(``compare.child``, which needs detectron2), and leaves one record. ``compare.report`` turns the
records into the tables of Tables 8 and 9 and needs no detectron2, so notebook 8 and the README read
the same file.

Files::

    <runs>/<budget_id>/<detector>_<backbone>.seed<s>/   detectron2's OUTPUT_DIR (metrics.json, checkpoints,
                                                        inference/) and record.json once finished
    <out>/results.json     {"format", "grid": "detection", "budget", "budget_id", "records": [...]}
    <out>/results.md       box AP (Table 8's columns) and mask AP (Table 9's), mean and spread per backbone
    <out>/predictions.json the seed-0 detections of every backbone on the first validation images
"""

from .configs import BACKBONES, DETECTORS, budget_of_config, config_path, load_config_chain

__all__ = ["BACKBONES", "DETECTORS", "budget_of_config", "config_path", "load_config_chain"]
